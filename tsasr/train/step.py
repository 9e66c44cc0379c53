"""The training step: one pure function (state, batch, rng) -> (state, measurements).

The model computes logits, tsasr.losses computes the loss; this module only wires them
to the optimizer. No Python-side state changes inside the step: it is traced once per
batch shape and then only executed.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tsasr import losses
from tsasr.models import subsampling
from tsasr.train import sharding as sharding_lib
from tsasr.train.state import TrainState

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str):
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype must be one of {sorted(COMPUTE_DTYPES)}; got {name!r}.")
    return COMPUTE_DTYPES[name]


def cast_floats(tree, dtype):
    """Every floating leaf of `tree` cast to `dtype` (mixed precision: params and inputs)."""
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def make_frame_ce_loss(model, target_key: str, dtype=jnp.float32):
    """loss_fn(params, batch, rng, train) -> (frame CE, {'frame_accuracy'}, real frames): frame
    classification of batch[target_key] [batch, frames] int labels (tsasr.losses.frame_cross_entropy),
    the targets subsampled to the model's output rate (its config.subsampling, when it has one)."""
    factor = getattr(getattr(model, "config", None), "subsampling", 1)

    def loss_fn(params, batch, rng, train=True):
        features = batch["features"]
        if dtype != jnp.float32:
            params, features = cast_floats(params, dtype), features.astype(dtype)
        logits, paddings = model.apply(
            {"params": params}, features, batch["feature_paddings"], train=train, rngs={"dropout": rng}
        )
        targets, _ = subsampling.subsample_targets(batch[target_key], batch["feature_paddings"], factor)
        loss, accuracy, frames = losses.frame_cross_entropy(logits, targets, paddings)
        return loss, {"frame_accuracy": accuracy}, frames

    return loss_fn


def _with_aux(loss_fn: Callable) -> Callable:
    """(loss, metrics, weight) -> (loss, (metrics, weight)): the shape jax.value_and_grad's has_aux takes."""

    def wrapped(*args, **kwargs):
        loss, metrics, weight = loss_fn(*args, **kwargs)
        return loss, (metrics, weight)

    return wrapped


def make_train_step(loss_fn: Callable, tx: optax.GradientTransformation, schedule: optax.Schedule):
    """The pure step; jit it with `jit_train_step`.

    loss_fn(params, batch, rng, train[, frozen]) -> (loss, metrics, weight): the loss (a mean
    over what it counts), a dict of scalars averaged the same way (e.g. frame accuracy), and
    the weight of this batch in those means (e.g. its real frames, or clips). The step's
    measurements are the loss, the metrics, `weight`, the gradient norm and the learning rate.
    """

    def train_step(state: TrainState, batch: dict, rng: jax.Array, frozen=None):
        """One update on a global batch. rng is the run's base key; the step's key is
        fold_in(rng, step), so it does not depend on how many steps this process ran.
        `frozen` (e.g. an online teacher's params) reaches the loss and is not trained."""
        rng = jax.random.fold_in(rng, state.step)
        grad_fn = jax.value_and_grad(
            _with_aux(loss_fn if frozen is None else functools.partial(loss_fn, frozen=frozen)), has_aux=True
        )
        (loss, (metrics, weight)), grads = grad_fn(state.params, batch, rng)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        measurements = {
            "loss": loss,
            **metrics,
            "weight": weight,
            "grad_norm": optax.tree.norm(grads),
            "learning_rate": schedule(state.step),
        }
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, measurements

    return train_step


def make_eval_step(loss_fn: Callable):
    """eval_step(params, batch[, frozen]) -> weighted sums {'loss': loss * weight, metric: metric *
    weight, ..., 'weight': weight}.

    Sums, not means, so that batches of any size and padding combine exactly.
    """

    def eval_step(params, batch, frozen=None):
        extra = {} if frozen is None else {"frozen": frozen}
        loss, metrics, weight = loss_fn(params, batch, jax.random.PRNGKey(0), train=False, **extra)
        return {"loss": loss * weight, **{k: v * weight for k, v in metrics.items()}, "weight": weight}

    return eval_step


def jit_train_step(train_step: Callable, mesh, with_frozen: bool = False):
    """jit with donated state, replicated state and measurements, batch split on `data`;
    with_frozen: the step takes a fourth argument, replicated frozen params."""
    replicated = sharding_lib.replicated(mesh)
    in_shardings = (replicated, sharding_lib.batch_sharding(mesh), replicated) + ((replicated,) if with_frozen else ())
    return jax.jit(
        train_step,
        donate_argnums=(0,),
        in_shardings=in_shardings,
        out_shardings=(replicated, replicated),
    )


def check_finite(step: int, measurements: dict, ids) -> None:
    """The NaN/Inf guard, run on the host on fetched measurements.

    Raises FloatingPointError naming the step and the utterances of its batch.
    """
    bad = {k: float(v) for k, v in measurements.items() if not np.isfinite(v)}
    if bad:
        names = [str(i) for i in np.asarray(ids).tolist() if i]
        raise FloatingPointError(f"non-finite {bad} at step {step} on the batch of utterances {names}")
