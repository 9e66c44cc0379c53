"""The `tagging` recipe's config: IUSP distillation for audio tagging, and its --tiny shrink.

Every field has a comment. The built-in corpus is sized so that the whole experiment
(corpus, teacher, 4 student sizes x 4 methods, evaluation) runs in about 15 minutes on a
2-core CPU: 2 s clips instead of SONYC's 10 s, and a few hundred of them. This module
imports no JAX, so loading a config stays fast.
"""

from __future__ import annotations

import ml_collections

from tsasr.train.config import train_config

# The 8 SONYC-UST coarse classes, in the order of the label vector (their SONYC ids are 1..8).
CLASSES = (
    "engine",
    "machinery-impact",
    "non-machinery-impact",
    "powered-saw",
    "alert-signal",
    "music",
    "human-voice",
    "dog",
)
METHODS = ("bce", "kd", "kd_sp", "kd_iusp")  # the student's objectives, in the report's order


def _train(num_steps: int, learning_rate: float) -> ml_collections.ConfigDict:
    t = train_config()
    t.num_steps = num_steps  # updates of this model (the cosine schedule spans them)
    t.feature_dim = 64  # log-mel bands of the input (tsasr.audio.lfbe)
    t.weight_unit = "clips"  # the loss is a mean over clips
    t.checkpoint_every = 100  # steps between checkpoints (a killed run resumes from the last)
    t.log_every = 25  # steps between metrics lines
    t.progress_bar = False  # no tqdm bar: several stages log one after another
    t.optimizer.learning_rate = learning_rate  # peak Adam learning rate
    t.optimizer.warmup_steps = 20  # linear warmup
    return t


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.recipe = "tagging"  # the recipe whose stages run (tsasr/recipes/tagging)
    c.name = "tagging"  # experiment name; the default workdir is runs/<name>
    c.seed = 0  # one seed for every random draw (corpus, label noise, init, shuffling, bootstrap)

    c.data = d = ml_collections.ConfigDict()
    d.source = "builtin"  # 'builtin' (synthesised urban sound tagging corpus) or 'sonyc' (a SONYC-UST directory)
    # built-in: clip length in seconds (SONYC's are 10 s; 2 s keeps the experiment within 15 min on 2 cores)
    d.seconds = 2.0
    d.num_sensors = 24  # built-in: recording sensors; each has its own background, gain and class priors
    d.test_sensors = 8  # built-in: sensors held out for the test split (split by sensor, as SONYC does)
    d.clips_per_sensor = 28  # built-in: clips recorded by each sensor
    d.class_prior = (0.15, 0.45)  # built-in: per sensor and class, the chance a clip holds the class (uniform range)
    d.events_per_class = (1, 4)  # built-in: occurrences of a present class within a clip (inclusive range)
    d.event_snr_db = (-3.0, 12.0)  # built-in: level of each event over the clip's background, dB
    d.outdoor_fraction = 0.6  # built-in: share of clips with an outdoor response (else a small-room reverb)
    d.rt60 = (0.15, 0.6)  # built-in: reverberation time of the simulated rooms, seconds
    d.speech_bank = 24  # built-in: espeak-ng utterances synthesised once and reused for human-voice events
    # Annotator-style label noise on the training split (built-in): each of `annotators` misses a
    # present class with probability `label_miss` and adds an absent one with `label_false_alarm`;
    # the training label is their majority vote. Test labels stay the truth (SONYC's verified set).
    d.annotators = 3
    d.label_miss = 0.15
    d.label_false_alarm = 0.03
    d.sonyc_dir = ""  # source='sonyc': directory holding annotations.csv and the audio folder
    d.sonyc_audio = "audio"  # source='sonyc': the audio folder under sonyc_dir (files found by audio_filename)
    d.sonyc_splits = ml_collections.ConfigDict({"train": "train", "validate": "test"})  # SONYC split -> ours
    d.agreement = 0.5  # source='sonyc': a class is present when at least this share of annotators marked it

    c.teacher = t = ml_collections.ConfigDict()
    # VGG-like CNN (tsasr/recipes/tagging/models.py): conv 3x3 blocks with these output channels,
    # each followed by LayerNorm, ReLU and pooling; its IUSP layer is the last block's output.
    t.channels = (16, 32, 64, 128)
    t.batch_size = 16  # clips per step
    t.train = _train(600, 2e-3)  # the teacher's training (BCE only)

    c.student = s = ml_collections.ConfigDict()
    # Student sizes ('s1' has the most parameters, 38k, from its LSTM's 256 inputs; s2-s4 grow): 'lstm' = one conv layer (channels[0], 5x5, stride 2) + one LSTM
    # (lstm_units); 'cnn' = the teacher's layout with these channels. Names become systems student_<name>_<method>.
    s.sizes = ml_collections.ConfigDict(
        {
            "s1": {"kind": "lstm", "channels": (8,), "lstm_units": 32},
            "s2": {"kind": "cnn", "channels": (2, 4, 8, 16), "lstm_units": 0},
            "s3": {"kind": "cnn", "channels": (4, 8, 16, 32), "lstm_units": 0},
            "s4": {"kind": "cnn", "channels": (8, 16, 32, 64), "lstm_units": 0},
        }
    )
    s.methods = METHODS  # objectives trained together along the loop's members axis, one stage per size
    s.batch_size = 16  # clips per step (also the b of SP-KD's batch Gram matrix)
    s.bce_weight = 1.5  # w_bce: weight of BCE on the (noisy) labels, every method
    s.kd_weight = 1.5  # w_kd: weight of KD on the teacher's tempered sigmoid outputs (methods kd*)
    s.sp_weight = 10.0  # beta for SP-KD (method kd_sp): the public reimplementation's 10
    s.iusp_weight = 10.0  # beta for IUSP (method kd_iusp): set equal to SP's (the paper's value was not found)
    s.temperature = 2.0  # T of KD: targets sigmoid(teacher logits / T), student sigmoid(logits / T)
    s.train = _train(400, 2e-3)  # each student size's training (all its methods at once)

    c.score = sc = ml_collections.ConfigDict()
    sc.replications = 500  # bootstrap resamples of the test clips for the 95 % intervals
    sc.min_threshold = 0.01  # DCASE 2019 Task 5: thresholds below this are skipped in the AUPRC sweep
    sc.batch_size = 32  # clips per jitted inference batch
    return c


def tiny(config: ml_collections.ConfigDict) -> None:
    """Shrinks `config` in place for a smoke run (the end-to-end test): seconds, not minutes."""
    config.data.seconds = 1.0
    config.data.num_sensors = 4
    config.data.test_sensors = 2
    config.data.clips_per_sensor = 8
    config.data.speech_bank = 2
    config.teacher.channels = (4, 8)
    config.teacher.batch_size = 4
    config.teacher.train.num_steps = 4
    config.teacher.train.optimizer.warmup_steps = 0
    config.student.sizes = ml_collections.ConfigDict(
        {
            "s1": {"kind": "lstm", "channels": (2,), "lstm_units": 4},
            "s2": {"kind": "cnn", "channels": (2, 4), "lstm_units": 0},
        }
    )
    config.student.batch_size = 4
    config.student.train.num_steps = 4
    config.student.train.optimizer.warmup_steps = 0
    config.score.replications = 20
    config.score.batch_size = 8
