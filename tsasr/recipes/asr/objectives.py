"""The asr recipe's frame-level objectives, as tsasr.train losses: (loss, metrics, weight).

Frame CE on alignments, top-k soft-target CE on a teacher's stored (or online) labels, hard
labels mixed into soft targets, and the per-member soft-target loss of a k x T sweep. The
formulas live in tsasr.losses; these functions only choose targets from the batch and apply
the model (subsampling the targets to its output rate).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from tsasr import losses
from tsasr.models import subsampling
from tsasr.train import step as step_lib


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
    """loss_fn(params, batch, rng, train, frozen=None) -> (loss, {'frame_accuracy'}, num_frames):
    the trainer's loss contract, (loss, metrics averaged like the loss, weight).

    The objective follows the batch: `senones` alone -> frame CE on alignments; `soft_ids`
    with `soft_probs` or `soft_logits` -> top-k soft-target CE (targets derived from logits
    at top-k soft_top_k (0 = all stored) and temperature soft_temperature).

    hard_weight w > 0 mixes hard labels into soft-target training: on frames whose batch
    `senones` is an alignment (>= 0; -1 marks unlabelled frames) the target becomes
    (1 - w) * teacher + w * one-hot(alignment), i.e. per frame
    (1 - w) * soft CE + w * frame CE; unlabelled frames keep the soft CE. The loss is the
    mean over all real frames.

    A k x T sweep's member (tsasr.train.loop.Members) carries its scalars `top_k` and
    `temperature` in the batch: its targets are then masked_soft_targets of the stored logits.

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
            params, features = step_lib.cast_floats(params, dtype), features.astype(dtype)
        logits, out_paddings = model.apply({"params": params}, features, paddings, train=train, rngs={"dropout": rng})
        if "soft_ids" in batch:
            ids, _ = subsampling.subsample_targets(batch["soft_ids"], paddings, factor)
            if "soft_probs" in batch:
                probs, _ = subsampling.subsample_targets(batch["soft_probs"], paddings, factor)
            else:
                teacher_logits, _ = subsampling.subsample_targets(batch["soft_logits"], paddings, factor)
                if "top_k" in batch:  # a sweep member's k and T: traced, so the targets are masked
                    probs = masked_soft_targets(teacher_logits, batch["top_k"], batch["temperature"])
                else:
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
        return loss, {"frame_accuracy": accuracy}, frames

    return loss_fn


def masked_soft_targets(teacher_logits, top_k, temperature):
    """softmax(logits[..., :k] / T) padded with zeros to K, for traced k and T.

    Args:
      teacher_logits: [batch, frames, K] stored teacher logits, highest first.
      top_k: int scalar (may be traced), 1 <= top_k <= K.
      temperature: float scalar (may be traced), > 0.

    Returns:
      [batch, frames, K] float32 probabilities: the first top_k sum to 1, the rest are 0.
    """
    keep = jnp.arange(teacher_logits.shape[-1]) < top_k
    scaled = jnp.where(keep, teacher_logits.astype(jnp.float32) / temperature, -jnp.inf)
    return jax.nn.softmax(scaled, axis=-1)
