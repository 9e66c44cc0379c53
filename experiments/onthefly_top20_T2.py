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
Expected: on the built-in main job (2026-12-07, 2 idle CPU cores, the same teacher and 1,270
          student steps: 5 epochs of 0-30 dB mixes): student_ce WER 21.2 / 33.8 / 49.5 % (clean /
          noisy / rerecorded) against online_top20_T2.py's 21.2 / 33.0 / 50.7 % with one stored
          noisy copy per utterance: equal within the paired bootstrap intervals of the change
          (-0.3 % [-6.0, +5.3], +2.6 % [-3.0, +9.2], -2.2 % [-5.2, +0.7]). student_ce took 360 s
          against the stored copy's 277 s.
"""

from tsasr.recipes.asr import base_config


def get_config():
    config = base_config()
    config.name = "onthefly_top20_T2"
    config.student.online = True
    config.student.noisify = "onthefly"
    config.lock()
    return config
