"""Configuration of the hmm stages (`align`, `graph`) and of decoding.

Mounted by the runner at `config.hmm` and `config.decode`. Every field has a comment;
defaults are sized for the ~1 h built-in corpus on 2 CPU cores.
"""

import ml_collections


def hmm_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.g2p = True  # pronounce words missing from cmudict with espeak-ng (counted, listed)
    c.max_prons = 2  # dictionary pronunciations kept per word
    c.silence_prob = 0.5  # probability of optional silence between words, in L
    c.self_loop_prob = 0.6  # HMM self-loop probability (geometric state durations)
    c.self_loop_scale = 0.1  # transition costs relative to acoustic scores (Kaldi's default)
    c.align_acoustic_scale = 0.1  # acoustic scale of Viterbi alignment
    c.align_beam = 10.0  # alignment beam
    c.align_retry_beam = 40.0  # beam of the single retry after a failed alignment
    c.mono_iters = 12  # monophone EM passes
    c.mono_realign_every = 3  # realign the monophone system every this many passes
    c.mono_gaussians = 1000  # total Gaussians of the monophone system after splitting
    c.num_senones = 800  # target leaves of the senone tree (the senone inventory size)
    c.tree_min_count = 40.0  # minimum frames on each side of a tree split
    c.tree_min_gain = 10.0  # stop splitting when the best log-likelihood gain is below this
    c.tri_iters = 8  # triphone EM passes
    c.tri_realign_every = 4  # realign the triphone system every this many passes
    c.tri_gaussians = 4000  # total Gaussians of the triphone system after splitting
    c.boundary_tolerance_s = 0.02  # alignment boundary accuracy tolerance vs TTS timings
    c.lm_order = 3  # n-gram order of the decoding LM (kaldingram Kneser-Ney)
    c.lm_splits = ("train_labelled",)  # manifests whose transcripts train the LM
    c.gmm_baseline = True  # run the `gmm` stage: decode the test conditions with the triphone GMM
    return c


def hmm_config_tiny() -> ml_collections.ConfigDict:
    c = hmm_config()
    c.mono_iters = 8
    c.mono_gaussians = 300
    c.num_senones = 250
    c.tree_min_count = 10.0
    c.tri_iters = 4
    c.tri_realign_every = 2
    c.tri_gaussians = 500
    c.lm_order = 2
    return c


def decode_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # Networks' FasterDecoder search. Measured on 80 noisy test utterances with the CE teacher:
    # beam 13 / 7000 active 41.6 s, 74.7 % WER; beam 10 / 2000 active 7.6 s, 75.2 % WER.
    c.beam = 10.0
    c.max_active = 2000
    c.acoustic_scale = 0.1  # scale of log-likelihoods (log posterior - log prior) vs graph costs
    # Acoustic scales tried on (clean) dev for the GMM baseline; the best one decodes the
    # tests. The TTS corpus makes GMM likelihoods peaky: the best scale is well below 0.1.
    c.gmm_acoustic_scales = (0.02, 0.03, 0.045, 0.06)
    # Beam of the GMM baseline: at its small acoustic scale the default beam searches three
    # times wider in acoustic terms; 10 costs a few tenths of a point of WER, is 3x faster.
    c.gmm_beam = 10.0
    c.prior_floor = 1e-8  # senone priors are floored here before the log
    c.conditions = ("clean", "noisy", "rerecorded")  # test conditions scored when present
    c.bootstrap_replications = 10000  # bootstrap resamples for confidence intervals
    return c


def decode_config_tiny() -> ml_collections.ConfigDict:
    c = decode_config()
    c.gmm_acoustic_scales = (0.1,)
    c.bootstrap_replications = 1000
    return c
