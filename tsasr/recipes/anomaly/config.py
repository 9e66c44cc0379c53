"""The anomaly recipe's config: every field commented."""

import ml_collections

from tsasr.train.config import train_config

TYPES = ("fan", "pump", "slider", "valve", "ToyCar", "ToyConveyor")


def _train(num_steps: int, learning_rate: float, unit: str) -> ml_collections.ConfigDict:
    c = train_config()
    c.num_steps = num_steps  # updates (each updates the model of every machine type at once)
    c.optimizer.learning_rate = learning_rate  # Adam's peak rate
    c.optimizer.decay = "constant"  # constant after warmup, as the baseline's Keras Adam
    c.optimizer.clip_norm = 0.0  # no gradient clipping (the baseline had none)
    c.weight_unit = unit  # what the loss's weight counts
    c.checkpoint_every = 0  # a checkpoint at the end only: these runs take a minute or two
    c.log_every = 25  # steps between metrics lines
    c.progress_bar = False  # no tqdm bar in logs
    return c


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.recipe = "anomaly"  # tsasr/recipes/anomaly
    c.name = "anomaly"  # experiment name (the experiment file's stem by default)
    c.seed = 0  # every draw: the built-in data, initialisation, batches, bootstrap
    c.until = ""  # last stage to run ('' = all); the command line's --until wins

    c.data = ml_collections.ConfigDict()
    c.data.source = "builtin"  # 'builtin': generate the set in WORKDIR/machines; 'dcase': read data.dcase_dir
    c.data.dcase_dir = ""  # the real DCASE 2020 Task 2 development set: the folder holding fan/, pump/, ...
    c.data.types = TYPES  # machine types, in table order (real data: the subfolders to read)
    c.data.ids = (0, 2, 4)  # built-in: machine IDs per type (the development set's fan has 00, 02, 04, 06)
    c.data.train_clips = 40  # built-in: normal training clips per ID (the real set has ~1000 per ID)
    c.data.test_clips = 16  # built-in: normal and as many anomalous test clips per ID
    c.data.seconds = 2.0  # built-in: clip length in seconds (the real clips are 10 s)
    c.data.anomaly_strength = 1.0  # built-in: scales every fault's level (1 = the documented ranges)
    c.data.snr_db = (0.0, 10.0)  # built-in: machine-to-factory-noise ratio range (dB), drawn per clip

    c.ae_baseline = ml_collections.ConfigDict()
    c.ae_baseline.hidden = 128  # width of the 8 hidden Dense layers (the baseline's 128)
    c.ae_baseline.bottleneck = 8  # bottleneck width (the baseline's 8)
    c.ae_baseline.layers = 4  # Dense + BatchNorm + ReLU layers on each side of the bottleneck
    c.ae_baseline.batch_size = 8  # clips per type per step (8 x 59 = 472 vectors, about the baseline's 512)
    c.ae_baseline.population_vectors = 20000  # training vectors per type for BatchNorm's inference statistics
    c.ae_baseline.train = _train(
        500, 1e-3, "vectors"
    )  # 500 steps = 33 epochs of the 120 clips per type (the baseline: 100 epochs)

    c.id_classifier = ml_collections.ConfigDict()
    c.id_classifier.max_ids = 4  # ID slots per type (the most IDs any type has)
    c.id_classifier.window = 32  # log-mel frames per window (32 x 32 ms = 1 s)
    c.id_classifier.hop = 16  # frames between windows (3 windows per 2 s clip)
    c.id_classifier.width = 16  # stem channels (blocks: 24, 32, 48; head 128)
    c.id_classifier.expansion = 4  # inverted-residual expansion
    c.id_classifier.warp_bands = 3  # spectral warping: pseudo-IDs shifted up this many mel bands (0 = none)
    c.id_classifier.batch_size = 8  # clips per type per step
    c.id_classifier.train = _train(300, 2e-3, "windows")  # ID classification training

    c.group_made = ml_collections.ConfigDict()
    c.group_made.groups = 8  # groups of mel bands (8 bands each) in the autoregressive order
    c.group_made.hidden = 256  # units per masked hidden layer
    c.group_made.layers = 2  # masked hidden layers
    c.group_made.batch_size = 8  # clips per type per step
    c.group_made.train = _train(300, 1e-3, "vectors")  # density estimation training

    c.score = ml_collections.ConfigDict()
    c.score.max_fpr = 0.1  # pAUC's FPR limit (DCASE 2020: 0.1)
    c.score.replications = 500  # bootstrap replicates for the 95 % intervals
    c.score.batch_size = 64  # clips per scoring batch (one compiled shape)

    c.ensemble = ml_collections.ConfigDict()
    c.ensemble.systems = ("id_classifier", "group_made")  # members, scores standardised per ID on training clips
    return c


def tiny(config: ml_collections.ConfigDict) -> None:
    """A smoke run: 2 IDs per type, 1 s clips, a few clips and steps."""
    config.data.ids = (0, 1)
    config.data.train_clips = 6
    config.data.test_clips = 3
    config.data.seconds = 1.0
    for system in ("ae_baseline", "id_classifier", "group_made"):
        config[system].batch_size = 4
        config[system].train.num_steps = 4
        config[system].train.log_every = 2
    config.ae_baseline.population_vectors = 200
    config.group_made.hidden = 32
    config.id_classifier.width = 8
    config.score.replications = 20
    config.score.batch_size = 8
