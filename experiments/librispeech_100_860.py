"""The paper's data regime on public data: LibriSpeech train-clean-100 labelled, train-clean-360
+ train-other-500 (860 h) unlabelled for the student, MUSAN noise.

Run:      python -m tsasr.run experiments/librispeech_100_860.py \\
              --config.corpus.librispeech.dir=/data/LibriSpeech --config.noise.musan_dir=/data/musan
Data:     LibriSpeech (openslr.org/12) unpacked: train-clean-100/, train-clean-360/, train-other-500/,
          dev-clean/, test-clean/, test-other/; MUSAN (openslr.org/17) with music/, noise/,
          speech/. Nothing is downloaded by tsasr. The test conditions are test-clean, its noisy
          and re-recorded copies, and test-other (condition `other`, clean only).
Optional: the LibriSpeech LM resources (openslr.org/11) as vocabulary and LM, instead of the
          trigram of the 100 h transcripts (which leave a few % of test-clean's words out of
          the vocabulary; the `oov` stage reports it): --config.hmm.lexicon=/data/librispeech-lexicon.txt
          --config.hmm.lm_arpa=/data/3-gram.pruned.1e-7.arpa (a pruned trigram: the decoding graph
          of the full 4-gram is far larger; neither has been built here). Measured room
          responses instead of simulated rooms (RIRS_NOISES, openslr.org/28):
          --config.noisify.rirs_dir=/data/RIRS_NOISES.
Runtime:  not run on this project's machines (LibriSpeech is not on them). Expected, from
          throughput measured on the built-in corpus, per 2 CPU cores unless said:
          noisify of the 960 h at 442-489x real time per core: ~2.1 core-hours;
          alignment and tree at ~40 s per labelled hour on 2 cores: ~1.1 h for the 100 h;
          frame training of a 256-wide TDNN at 5.68 M frames/s in bf16 on one H100: teacher
          4.5 epochs of 100 h ~1 min, student 2.5 epochs of 960 h ~3 min of step time (this
          file's 6-layer 1024-wide TDNN with 3000 senones costs roughly 20x the FLOPs per
          frame: about an hour of H100 time for both);
          WFST decoding at real-time factor 0.0013: seconds per test hour.
          Memory: today every training stage holds its features in host memory (~92 MB per
          hour of audio): the student stage needs ~90 GB of host RAM until streaming input
          (the scale issue) lands. Use a host with 128 GB or more.
Expected: results.md in the recipe's shape; no WER measured yet.
"""

from tsasr.recipes.asr import base_config


def get_config():
    config = base_config()
    config.name = "librispeech_100_860"
    config.corpus.source = "librispeech"  # corpus.librispeech.dir from the command line
    config.corpus.min_duration = 0.5
    config.corpus.extra_tests = "other=test-other"  # scored as condition `other` beside test-clean
    config.noise.source = "musan"  # noise.musan_dir from the command line
    config.hmm.num_senones = 3000  # a LibriSpeech-size tree (the built-in corpus uses 800)
    config.hmm.mono_gaussians = 2000
    config.hmm.tri_gaussians = 40000
    config.hmm.tree_min_count = 100.0
    for section in (config.teacher, config.student):
        section.model.update({"hidden": 1024, "num_layers": 6, "dilations": (0, 1, 2, 3, 3, 0)})
        section.batch_size = 64
        section.bucket_boundaries = (400, 800, 1600)
    config.sequence.batch_size = 64
    config.sequence.bucket_boundaries = (400, 800, 1600)
    config.lock()
    return config
