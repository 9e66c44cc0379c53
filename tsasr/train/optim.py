"""Optimizer from config: Adam/AdamW, linear warmup then cosine/exponential decay, clipping."""

import ml_collections
import optax

from tsasr.train.config import optimizer_config


default_config = optimizer_config  # the optimizer options: tsasr/train/config.py


def learning_rate_schedule(config, num_steps: int) -> optax.Schedule:
    """Warmup then decay over num_steps total updates."""
    warmup = int(config.warmup_steps)
    peak = float(config.learning_rate)
    if config.decay == "cosine":
        decay = optax.cosine_decay_schedule(peak, max(num_steps - warmup, 1), alpha=config.final_fraction)
    elif config.decay == "exponential":
        decay = optax.exponential_decay(peak, config.decay_steps, config.decay_rate)
    elif config.decay == "constant":
        decay = optax.constant_schedule(peak)
    else:
        raise ValueError(f"optimizer.decay must be cosine, exponential or constant; got {config.decay!r}.")
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def make_optimizer(config, num_steps: int):
    """Returns (GradientTransformation, learning-rate schedule) for config (see above)."""
    schedule = learning_rate_schedule(config, num_steps)
    if config.name == "adam":
        optimizer = optax.adam(schedule, b1=config.b1, b2=config.b2, eps=config.eps)
    elif config.name == "adamw":
        optimizer = optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=config.eps, weight_decay=config.weight_decay)
    else:
        raise ValueError(f"optimizer.name must be adam or adamw; got {config.name!r}.")
    if config.clip_norm:
        optimizer = optax.chain(optax.clip_by_global_norm(config.clip_norm), optimizer)
    return optimizer, schedule
