"""The `asr` recipe's config: the paper's recipe on the built-in corpus, and its --tiny shrink.

Every field has a comment saying what it is. Experiment files start from `base_config()`
and change a few fields. This module imports no Kaldi wheel and no JAX: loading a config
stays fast, and `python -m tsasr.run` / `tsasr.launch` start without them.
"""

from __future__ import annotations

import ml_collections

from tsasr.data import layout
from tsasr.train.config import train_config


def base_config() -> ml_collections.ConfigDict:
    """The paper's recipe on the built-in corpus (DESIGN.md), sized for a 2-core CPU."""
    c = ml_collections.ConfigDict()
    c.recipe = "asr"  # the recipe whose stages run (tsasr/recipes/asr)
    c.name = "base"  # experiment name; the default workdir is runs/<name>
    c.seed = 0  # one seed for every random draw of the run (corpus, mixes, init, shuffling)
    c.workers = (
        0  # processes for data preparation, alignment and decoding; 0 = one per core (outputs never depend on it)
    )

    c.corpus = corpus = ml_collections.ConfigDict()
    corpus.source = "builtin"  # 'builtin' (espeak-ng voice-assistant corpus), 'manifest' (your own) or 'librispeech'
    corpus.hours = 2.3  # built-in: total hours of speech over all four splits (scale to 100+ for real runs)
    corpus.num_speakers = 200  # built-in: synthetic speakers (accent x voice variant x pitch x rate), split disjointly
    # built-in: share of speakers and audio per split. The paper's regime: the student's
    # parallel data (labelled + unlabelled) is 6 x the labelled hours (here 0.35 + 1.75 h).
    corpus.split_fractions = ml_collections.ConfigDict(
        {"train_labelled": 0.35, "train_unlabelled": 1.75, "dev": 0.08, "test": 0.12}
    )
    corpus.pitch_range = (25, 75)  # built-in: espeak pitch (0-99) drawn per speaker
    corpus.rate_range = (140, 200)  # built-in: speaking rate in words per minute drawn per speaker
    corpus.recording = (
        ml_collections.ConfigDict(  # built-in: each utterance recorded in a room (data_prep/recording.py)
            {
                "enabled": True,  # False: espeak-ng's dry output at one level, cleaner than any real recording
                "rooms": {  # small furnished rooms, the talker near the microphone (metres, seconds)
                    "length": (3.0, 6.0),
                    "width": (2.5, 5.0),
                    "height": (2.4, 3.0),
                    "rt60": (0.15, 0.45),
                    "talker_distance": (0.3, 1.5),
                    "margin": 0.3,
                },
                "max_order": 3,  # image-source order of the early reflections (the tail is stochastic)
                "level_db": (-35.0, -15.0),  # RMS of the recording, dBFS
                "self_noise_db": (30.0, 50.0),  # speech-to-microphone-self-noise ratio
            }
        )
    )
    corpus.manifests = ml_collections.ConfigDict(  # source='manifest': JSONL per split (id, audio, text, speaker)
        {"train_labelled": "", "train_unlabelled": "", "dev": "", "test": ""}
    )
    corpus.librispeech = ml_collections.ConfigDict(  # source='librispeech': its root, and each split's subsets
        {
            "dir": "",  # the directory holding train-clean-100/, dev-clean/, ... (openslr.org/12, unpacked)
            "train_labelled": "train-clean-100",  # comma-separated subsets per split
            "train_unlabelled": "train-clean-360,train-other-500",
            "dev": "dev-clean",
            "test": "test-clean",
        }
    )
    # More clean test sets, each its own condition: 'name=source,...' (a manifest, or LibriSpeech
    # subsets joined by '+'), e.g. other=test-other; written to corpus/test_<name>.jsonl.
    corpus.extra_tests = ""
    corpus.min_duration = 0.3  # seconds; shorter files are bad input
    corpus.min_level_db = -60.0  # dBFS; a file whose loudest 25 ms frame is quieter is near-silent, bad input
    corpus.alphabet = "[a-z' ]"  # characters allowed in transcripts (after lower-casing)
    corpus.on_bad_input = "skip"  # 'skip' (named in the log, counted in the summary) or 'stop'

    c.noise = noise = ml_collections.ConfigDict()
    noise.source = "builtin"  # 'builtin' (synthesised media noise) or 'musan' (a MUSAN-layout directory)
    noise.train_minutes = 12.0  # built-in: minutes of training noise
    noise.test_minutes = 4.0  # built-in: minutes of held-out test noise (disjoint clips and TV voices)
    noise.clip_seconds = 20.0  # built-in: length of each noise clip
    noise.kind_weights = (
        ml_collections.ConfigDict(  # built-in: share of each noise kind (media dominate, as in the paper)
            {"music": 0.45, "tv": 0.35, "stationary": 0.2}
        )
    )
    noise.musan_dir = ""  # source='musan': directory with music/, noise/, speech/
    noise.musan_test_percent = 20  # source='musan': share of files held out for test noise

    c.noisify = nz = ml_collections.ConfigDict()
    nz.num_noises = (1, 3)  # noise sources per utterance, inclusive range
    nz.kind_weights = ml_collections.ConfigDict(  # probability weight of each noise kind when drawing
        {"music": 0.45, "tv": 0.35, "stationary": 0.2, "noise": 0.2, "speech": 0.35}
    )
    nz.relative_level_db = (-6.0, 6.0)  # level of each noise source relative to the others, at the source
    # training copies: speech-to-noise ratio of the reverberant mix, uniform. 0-30 dB chosen on the dev set
    # (lower mean of clean and noisy dev WER than 0-20 and 10-30 dB; README "What holds")
    nz.snr_db = (0.0, 30.0)
    nz.test_snr_db = (0.0, 20.0)  # the simulated-noisy test and the noisy dev set (fixed while snr_db is tuned on dev)
    nz.max_order = 3  # image-source order of the early reflections (the late tail is stochastic, see data_prep/rir.py)
    nz.rooms = ml_collections.ConfigDict(
        {  # training and simulated-noisy-test rooms (metres, seconds)
            "length": (3.0, 8.0),
            "width": (2.5, 6.0),
            "height": (2.4, 3.2),
            "rt60": (0.15, 0.6),
            "talker_distance": (0.5, 2.5),
            "margin": 0.3,
        }
    )
    nz.rerecorded_rooms = ml_collections.ConfigDict(
        {  # re-recorded test rooms: disjoint from training ranges
            "length": (8.5, 12.0),
            "width": (6.5, 9.0),
            "height": (3.3, 4.0),
            "rt60": (0.65, 0.9),
            "talker_distance": (1.0, 3.0),
            "margin": 0.3,
        }
    )
    nz.rerecorded_snr_db = (0.0, 20.0)  # re-recorded test: speech-to-media ratio
    nz.loudspeaker = ml_collections.ConfigDict(
        {  # re-recorded test: playback through a small loudspeaker
            "low_hz": (120.0, 250.0),
            "high_hz": (5000.0, 7200.0),
            "drive": (1.0, 2.5),
        }
    )
    nz.mic_self_noise_db = (30.0, 45.0)  # re-recorded test: speech-to-microphone-self-noise ratio
    nz.test_manifests = ml_collections.ConfigDict(  # real recordings for a test condition instead of simulation
        {"noisy": "", "rerecorded": ""}
    )
    nz.rirs_dir = ""  # an OpenSLR 28 RIRS_NOISES directory: its room responses replace the room simulation
    nz.rirs_subsets = ("real", "smallroom", "mediumroom", "largeroom")  # rirs_dir's response sets drawn from
    nz.rirs_test_percent = 20  # rirs_dir: share of its rooms held out for the test conditions (never in training)

    c.hmm = hmm_config()  # lexicon, GMM-HMM bootstrap, senone tree, LM (tsasr/hmm)
    c.decode = decode_config()  # WFST decoding and scoring: the evaluation stages (tsasr/recipes/asr/evaluate.py)

    c.teacher = ce_config()  # teacher frame-level CE on clean labelled data (tsasr/train/teacher.py)
    c.student = student_config()  # soft labels and the student (tsasr/distill)
    c.sequence = sequence_config()  # LF-MMI for teacher and student (tsasr/train/sequence.py)
    c.baselines = baselines_config()  # systems beside the recipe (off by default)
    c.until = ""  # last stage to run ('' = all); the command line's --until wins
    return c


def tiny(config: ml_collections.ConfigDict) -> None:
    """Shrinks a config in place so the whole chain runs in about two minutes (tests, smoke runs)."""
    config.corpus.hours = 0.05
    config.corpus.num_speakers = 12
    config.corpus.split_fractions.update({"train_labelled": 0.35, "train_unlabelled": 0.45, "dev": 0.08, "test": 0.12})
    config.noise.train_minutes = 1.0
    config.noise.test_minutes = 0.5
    config.noise.clip_seconds = 10.0
    config.hmm.update(hmm_config_tiny())
    config.decode.update(decode_config_tiny())
    config.teacher.model.update({"hidden": 128, "num_layers": 3, "dilations": (0, 1, 0)})
    config.teacher.batch_size = 8
    config.teacher.train.num_steps = 60
    config.teacher.train.num_epochs = 0.0  # fixed step counts: the tiny run's time does not depend on its data
    config.teacher.train.eval_every = 30
    config.teacher.train.checkpoint_every = 30
    config.teacher.train.log_every = 10
    config.student.model.update(config.teacher.model.to_dict())
    config.student.batch_size = 8
    config.student.label_shards = 2
    config.student.train.num_steps = 60
    config.student.train.num_epochs = 0.0
    config.student.train.eval_every = 30
    config.student.train.checkpoint_every = 30
    config.student.train.log_every = 10
    config.sequence.batch_size = 8
    config.sequence.den_order = 3
    config.sequence.train.num_steps = 6
    config.sequence.train.num_epochs = 0.0
    config.sequence.train.checkpoint_every = 6
    config.sequence.train.log_every = 3
    for section in (config.teacher, config.student, config.sequence):
        section.bucket_boundaries = (256,)  # one compiled step per stage
    config.decode.beam = 11.0
    config.decode.max_active = 2000
    config.decode.bootstrap_replications = 200


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
    c.lexicon = ""  # a lexicon file, Kaldi's 'word phone phone ...' (ARPAbet): its words are pronounced from it
    c.lm_text = ()  # text files (one sentence a line) whose lines train the LM beside the transcripts; adds words
    c.lm_arpa = ""  # an ARPA LM that decodes instead of the trained one; its words are the decoding vocabulary
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
    c.conditions = tuple(layout.CONDITIONS)  # test conditions scored when present: clean, noisy, rerecorded
    c.bootstrap_replications = 10000  # bootstrap resamples for confidence intervals
    return c


def decode_config_tiny() -> ml_collections.ConfigDict:
    c = decode_config()
    c.gmm_acoustic_scales = (0.1,)
    c.bootstrap_replications = 1000
    return c


def ce_config() -> ml_collections.ConfigDict:
    """Frame-level training of an acoustic model; sized for the built-in corpus on 2 cores."""
    c = ml_collections.ConfigDict()
    c.model = ml_collections.ConfigDict(
        {  # tsasr.models: name and sizes (num_senones comes from the tree)
            "name": "tdnn",
            "hidden": 256,
            "num_layers": 4,
            "input_context": (3, 3),
            "dilations": (0, 1, 2, 0),
            "subsampling": 1,
        }
    )
    c.batch_size = 16  # utterances per global batch
    c.bucket_boundaries = (256, 512)  # padded lengths in frames (each is one compilation)
    c.heldout_percent = 5  # share of training utterances held out for frame accuracy
    c.utterance_mean = True  # subtract each utterance's mean LFBE before global mean/variance (Kaldi's CMN)
    c.input = "memory"  # or 'stream': ArrayRecord shards in WORKDIR/records/<stage>/, LFBE in the step, memory O(batch)
    c.record_shards = 8  # input='stream': ArrayRecord shards (hosts read disjoint ones; a multiple of the hosts)
    c.loader_workers = 0  # input='stream': Grain worker processes (0: threads in this process); same batches
    c.loader_groups = 0  # input='stream': row groups per batch (0: record_shards); same batches for any host count
    c.train = train_config()  # steps, optimizer, checkpoints, precision (tsasr/train/config.py)
    c.train.num_epochs = 4.5  # passes over the labelled data (184 steps on the default corpus): scales with the data
    c.train.eval_every = 50  # held-out loss and frame accuracy every 50 steps; the best state is the model
    c.train.checkpoint_every = 100
    c.train.log_every = 10
    c.train.optimizer.learning_rate = 2e-3
    c.train.optimizer.warmup_steps = 20
    return c


def student_config() -> ml_collections.ConfigDict:
    """Soft labels from the teacher, and the student trained on them (tsasr/distill)."""
    c = ce_config()
    c.teacher = "teacher_ce"  # the trained stage that labels (its checkpoint is loaded read-only)
    # Table 2's other CE student: the same recipe on this teacher's labels, as system
    # student_ce_from_<teacher> ('' or the same teacher = none; experiments/top20_T2.py: teacher_seq).
    c.second_teacher = ""
    c.label_top_k = 40  # k stored per frame: the largest k any student derives from these labels; 0 = all senones
    c.label_shards = 8  # soft-label shards (hosts label disjoint shards; a kill redoes unfinished ones)
    c.top_k = 20  # k' <= label_top_k teacher senones kept per frame for this student; 0 = all (dense)
    c.temperature = 2.0  # T: targets are softmax(teacher logits[:k'] / T)
    c.hard_weight = 0.0  # w: on labelled frames the target is (1 - w) * teacher + w * one-hot(alignment)
    c.online = False  # the teacher runs inside the student's step on the clean audio; no stored labels
    c.noisify = "stored"  # or 'onthefly' (needs online): each epoch a fresh mix of every clean utterance, in the step
    # 'memory' or 'stream': training audio from ArrayRecord shards, LFBE in the step, host memory O(batch): the noisy
    # copies with their clean originals' targets in WORKDIR/records/<stage>/ (noisify='stored'; rewritten when the
    # labels, top_k, noisy data or alignments change), or the clean audio in WORKDIR/<stage>/records/ ('onthefly')
    c.input = "memory"
    # passes over the noisy training data (1,270 steps of the default corpus). Chosen on held-out data: from 2.5 to
    # 5 epochs the held-out soft-target loss fell 4.153 -> 4.098 and the dev WER 14.5 -> 14.1 clean, 33.2 -> 32.2 noisy
    c.train.num_epochs = 5.0
    c.train.eval_every = 60  # held-out soft-target loss every 60 steps; the best state is the student
    return c


def sequence_config() -> ml_collections.ConfigDict:
    """Lattice-free MMI fine-tuning of the CE teacher and student (tsasr/train/sequence.py)."""
    c = ml_collections.ConfigDict()
    # Phone n-gram order of the denominator graph. Kaldi uses 4, but on the built-in corpus's
    # ~20k training phones a 4-gram leaves the competing phone sequences almost no mass
    # (-0.15 nats/frame of LM score, of which the CE teacher already wins 0.137); the
    # trigram (-0.20) keeps more to discriminate against, at the same graph size (both are
    # one chain per seen triphone). A bigram expands every (left, phone, right): 59k states.
    c.den_order = 3
    c.den_extra_histories = 500  # histories kept beyond those of order < 3 (Kaldi chain's pruning; order 4+ only)
    c.tolerance = 5  # frames a phone boundary of the alignment may move in the numerator
    c.leaky_hmm_coefficient = 0.1  # Kaldi chain's --leaky-hmm-coefficient
    # Both regularisers are off: Kaldi's are for an unnormalised chain output with its own
    # xent head; ours is the normalised, scaled log posterior of the CE model. L2 on it pulls
    # every log posterior towards the log prior, i.e. flattens the model (5e-4: clean WER
    # 9.1 -> 10.5; its gradient is 0.5x the MMI gradient's norm), and the cross-entropy term
    # trains the same output towards numerator occupancies smeared by the scale and the
    # tolerance (0.1: 2x the MMI gradient's norm; clean WER +0.3 test, +0.9 dev).
    c.l2_regularize = 0.0  # L2 on the chain output (Kaldi's --l2-regularize)
    c.xent_regularize = 0.0  # cross-entropy of the same logits towards the numerator occupancies
    # + kld_regularize x the cross-entropy of the network's posteriors against the frozen CE
    # model's (the stage's init) on the same frames: KL-divergence regularisation. Chosen with the
    # learning rate on the dev set (below): LF-MMI alone made both networks worse on noisy speech.
    c.kld_regularize = 0.1
    c.acoustic_scale = 0.1  # chain output = scale * (log posterior - log prior): the decoder's score
    c.batch_size = 16  # utterances per global batch
    c.bucket_boundaries = (256, 512)  # padded lengths in frames
    # or 'stream': audio and alignments as ArrayRecord shards in WORKDIR/<stage>/records/, LFBE in
    # the step, numerators built per batch; host memory O(batch) (the held-out set stays in memory)
    c.input = "memory"
    c.record_shards = 8  # input='stream': ArrayRecord shards (hosts read disjoint ones; a multiple of the hosts)
    c.loader_workers = 0  # input='stream': Grain worker processes (0: threads in this process); same batches
    c.loader_groups = 0  # input='stream': row groups per batch (0: record_shards); same batches for any host count
    c.train = train_config()  # steps, optimizer, checkpoints (fine-tuning: small learning rate)
    c.heldout_percent = 5  # the CE stage's held-out utterances (same hash), for the held-out LF-MMI loss
    c.train.num_epochs = 1.0  # one pass over the labelled data (44 steps of the default corpus)
    # Held-out LF-MMI loss every 10 steps, and of the CE model before the first: the state
    # with the lowest is the model (the CE model itself when sequence training does not help).
    c.train.eval_every = 10
    c.train.checkpoint_every = 20
    c.train.log_every = 10
    # With kld_regularize, chosen on the dev set (164 utterances, 996 words; 2026-12-07) by the
    # sum over teacher_seq and student_seq of the mean of clean and noisy dev WER, from LF-MMI alone
    # at 1e-4 (the default before: teacher 13.76 / 44.48, student 13.25 / 33.23) and the weights
    # 0.1, 0.3, 1 at 1e-3 and 3e-3: 0.1 at 1e-3 gives teacher 13.65 / 41.97, student 12.55 / 30.52
    # (the CE models: 14.06 / 42.77 and 13.55 / 32.43). Larger weights or rates keep the CE model.
    c.train.optimizer.learning_rate = 1e-3
    c.train.optimizer.warmup_steps = 5
    return c


def baselines_config() -> ml_collections.ConfigDict:
    """Systems beside the recipe, trained only when switched on."""
    c = ml_collections.ConfigDict()
    c.multicondition = False  # the teacher's recipe (CE + LF-MMI) on the noisy labelled data, no distillation
    return c
