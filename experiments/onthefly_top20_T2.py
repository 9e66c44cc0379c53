"""online_top20_T2.py with on-the-fly noisify: every epoch the student hears a fresh mix of every
clean training utterance (1-3 noises, a new room, a new SNR) instead of the one stored noisy copy;
the host draws the recipes and computes the rooms' RIRs, the device convolves and mixes inside
the student's step, where the online teacher labels the clean audio of the same batch.

Run:      python -m tsasr.run experiments/onthefly_top20_T2.py
Smoke:    python -m tsasr.run experiments/onthefly_top20_T2.py --tiny
Runtime:  as online_top20_T2.py plus the mixing: each student step also convolves and mixes its
          batch and computes LFBE of the mix and of the clean audio. bench/input_pipeline.py's
          onthefly_noisify_overhead (step time with on-device mixing / on precomputed features,
          batch 16, buckets 256 / 512 frames, the online teacher in both): 1.16-1.19 on 2 CPU
          cores under load 5.4-6.9 from other jobs, 1.20 in CPU seconds (2026-12-06); the
          convolution (10 real FFTs of ~52k / 93k points per utterance) about 60 % of the extra,
          the LFBEs of the mix and of the clean audio the rest. The host draws
          16 rooms per step (~0.5 ms each, in the prefetch thread), and the normalisation costs one
          extra pass of mixing over the training set. --tiny: student_ce 22 s (online_top20_T2: 11 s).
Expected: on the built-in main job (2026-12-06, 2 CPU cores, the same teacher and 635 student
          steps: 2.5 epochs, the default until the student's 5 epochs of today): student_ce WER 22.1 / 35.0 / 50.9 % (clean / noisy / rerecorded) against
          online_top20_T2.py's 22.2 / 33.1 / 50.9 % with one stored noisy copy per utterance:
          equal within the bootstrap intervals (about +-3.5 / 4.7 / 5.3 points).
"""

from tsasr.recipes.asr import base_config


def get_config():
    config = base_config()
    config.name = "onthefly_top20_T2"
    config.student.online = True
    config.student.noisify = "onthefly"
    config.lock()
    return config
