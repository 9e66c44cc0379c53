"""Training and optimizer configs, apart from the code that uses them.

Experiment files build their configs at import time; keeping these free of JAX and optax
imports keeps `python -m tsasr.run` and config loading fast.
"""

import hashlib

import ml_collections


def optimizer_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = "adam"  # 'adam' or 'adamw' (decoupled weight decay).
    config.learning_rate = 1e-3  # Peak learning rate, reached after warmup.
    config.warmup_steps = 0  # Linear warmup from 0 to the peak.
    config.decay = "cosine"  # 'cosine', 'exponential' or 'constant' after warmup.
    config.final_fraction = 0.0  # Cosine: learning rate at the last step / peak.
    config.decay_rate = 0.5  # Exponential: factor per `decay_steps`.
    config.decay_steps = 1000  # Exponential: steps per factor of `decay_rate`.
    config.weight_decay = 0.0  # AdamW only.
    config.clip_norm = 5.0  # Global gradient-norm clipping; 0 disables.
    config.b1 = 0.9
    config.b2 = 0.999
    config.eps = 1e-8
    return config


def train_config() -> ml_collections.ConfigDict:
    """Training options; locked, so a misspelt field fails with its name."""
    config = ml_collections.ConfigDict()
    # Parameter init and per-step dropout keys derive from it. In a recipe, 0 means the run's
    # `seed`; another value retrains this one network from another initialisation (network_seed).
    config.seed = 0
    config.num_steps = 1000  # Total updates (the schedule spans them); see num_epochs.
    config.num_epochs = 0.0  # > 0: train this many passes over the data (num_steps is then derived from it).
    config.feature_dim = 64  # Input features per frame (LFBE bins).
    config.compute_dtype = "float32"  # 'bfloat16' for mixed precision on GPU/TPU.
    config.weight_unit = "frames"  # What a loss's weight counts (frames, clips): names the <unit>_per_s metric.
    config.checkpoint_every = 100  # Steps between checkpoints; 0 = only at the end.
    config.max_checkpoints = 3  # Checkpoints kept in the workdir.
    config.init_checkpoint = ""  # Checkpoint dir whose params start a fresh run.
    config.log_every = 10  # Steps between metrics lines.
    config.eval_every = 0  # Steps between dev evaluations (and at the end); 0 = none. The best on dev is kept.
    config.progress_bar = True  # tqdm bar with frames/s on process 0.
    config.prefetch = 2  # Batches prepared ahead on a background thread.
    config.optimizer = optimizer_config()
    config.lock()
    return config


def network_seed(run_seed: int, train_seed: int) -> int:
    """The init and dropout seed of one network of a recipe run: the run's `seed` while the
    network's `train.seed` is 0 (the default), else a seed drawn from both. So a network can be
    retrained from another initialisation with the data, the batches and the other networks
    as they were; the run's `seed` alone still moves everything."""
    if int(train_seed) == 0:
        return int(run_seed)
    digest = hashlib.sha256(f"{int(run_seed)}/{int(train_seed)}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def network_train_config(
    config: ml_collections.ConfigDict, section: ml_collections.ConfigDict
) -> ml_collections.ConfigDict:
    """A writable copy of one network's `section.train` with its seed resolved against the run's
    `config.seed` (network_seed): what a recipe hands tsasr.train.loop."""
    train = ml_collections.ConfigDict(section.train.to_dict())
    train.seed = network_seed(config.seed, section.train.seed)
    return train
