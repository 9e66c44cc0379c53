"""The training state: everything that a checkpoint must hold to resume bit for bit.

The optimizer and model are code, not state: they are rebuilt from the config, so the
state is a plain pytree that orbax saves and restores as is.
"""

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: number of updates applied so far.
    params: Any  # Model parameters, float32.
    opt_state: optax.OptState


def create(params, tx: optax.GradientTransformation) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
