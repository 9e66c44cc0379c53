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


def _cast_floats(tree, dtype):
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def make_loss_fn(
    model,
    factor: int,
    dtype=jnp.float32,
    soft_top_k: int = 0,
    soft_temperature: float = 1.0,
    *,
    hard_weight: float = 0.0,
    teacher: Callable | None = None,
):
    """loss_fn(params, batch, rng, train, frozen=None) -> (loss, (accuracy, num_frames)).

    The objective follows the batch: `senones` alone -> frame CE on alignments; `soft_ids`
    with `soft_probs` or `soft_logits` -> top-k soft-target CE (targets derived from logits
    at top-k soft_top_k (0 = all stored) and temperature soft_temperature).

    hard_weight w > 0 mixes hard labels into soft-target training: on frames whose batch
    `senones` is an alignment (>= 0; -1 marks unlabelled frames) the target becomes
    (1 - w) * teacher + w * one-hot(alignment), i.e. per frame
    (1 - w) * soft CE + w * frame CE; unlabelled frames keep the soft CE. The loss is the
    mean over all real frames.

    teacher: online distillation. `teacher(frozen, clean_features, paddings)` returns the
    teacher's (ids, logits) [batch, frames, k] sorted by logit, run inside this loss (so
    inside the jitted step) on the batch's `clean_features`, with its parameters `frozen`
    passed to the step, not trained; the targets are then derived exactly as from stored
    labels.

    Mixed precision: params and features are cast to `dtype` for the forward pass, so the
    gradients arrive in float32, the dtype of the params they are taken against.
    """

    def loss_fn(params, batch, rng, train=True, frozen=None):
        features, paddings = batch["features"], batch["feature_paddings"]
        if teacher is not None:
            ids, teacher_logits = teacher(frozen, batch["clean_features"], paddings)
            batch = {**batch, "soft_ids": ids, "soft_logits": jax.lax.stop_gradient(teacher_logits)}
        if dtype != jnp.float32:
            params, features = _cast_floats(params, dtype), features.astype(dtype)
        logits, out_paddings = model.apply({"params": params}, features, paddings, train=train, rngs={"dropout": rng})
        if "soft_ids" in batch:
            ids, _ = subsampling.subsample_targets(batch["soft_ids"], paddings, factor)
            if "soft_probs" in batch:
                probs, _ = subsampling.subsample_targets(batch["soft_probs"], paddings, factor)
            else:
                teacher_logits, _ = subsampling.subsample_targets(batch["soft_logits"], paddings, factor)
                probs = losses.soft_targets(teacher_logits, soft_top_k or None, soft_temperature)
            ids = ids[..., : probs.shape[-1]]
            loss, accuracy, frames = losses.soft_cross_entropy(logits, ids, probs, out_paddings)
            if hard_weight > 0.0:
                senones, _ = subsampling.subsample_targets(batch["senones"], paddings, factor)
                labelled = 1.0 - jnp.maximum(out_paddings, (senones < 0).astype(out_paddings.dtype))
                soft_on_labelled, _, labelled_frames = losses.soft_cross_entropy(logits, ids, probs, 1.0 - labelled)
                hard, _, _ = losses.frame_cross_entropy(logits, jnp.maximum(senones, 0), 1.0 - labelled)
                mixed = hard_weight * labelled_frames * (hard - soft_on_labelled)
                loss = loss + mixed / jnp.maximum(frames, 1.0)
        elif "senones" in batch:
            senones, _ = subsampling.subsample_targets(batch["senones"], paddings, factor)
            loss, accuracy, frames = losses.frame_cross_entropy(logits, senones, out_paddings)
        else:
            raise ValueError(f"batch has no targets (`senones` or `soft_ids`): {sorted(batch)}")
        return loss, (accuracy, frames)

    return loss_fn


def make_train_step(loss_fn: Callable, tx: optax.GradientTransformation, schedule: optax.Schedule):
    """The pure step; jit it with `jit_train_step`."""

    def train_step(state: TrainState, batch: dict, rng: jax.Array, frozen=None):
        """One update on a global batch. rng is the run's base key; the step's key is
        fold_in(rng, step), so it does not depend on how many steps this process ran.
        `frozen` (e.g. an online teacher's params) reaches the loss and is not trained."""
        rng = jax.random.fold_in(rng, state.step)
        grad_fn = jax.value_and_grad(
            loss_fn if frozen is None else functools.partial(loss_fn, frozen=frozen), has_aux=True
        )
        (loss, (accuracy, frames)), grads = grad_fn(state.params, batch, rng)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        measurements = {
            "loss": loss,
            "frame_accuracy": accuracy,
            "num_frames": frames,
            "grad_norm": optax.tree.norm(grads),
            "learning_rate": schedule(state.step),
        }
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, measurements

    return train_step


def make_eval_step(loss_fn: Callable):
    """eval_step(params, batch[, frozen]) -> frame-weighted sums {loss_sum, correct_sum, num_frames}.

    Sums, not means, so that batches of any size and padding combine exactly.
    """

    def eval_step(params, batch, frozen=None):
        extra = {} if frozen is None else {"frozen": frozen}
        loss, (accuracy, frames) = loss_fn(params, batch, jax.random.PRNGKey(0), train=False, **extra)
        return {"loss_sum": loss * frames, "correct_sum": accuracy * frames, "num_frames": frames}

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
