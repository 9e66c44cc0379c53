"""Top-k soft-target cross-entropy for teacher-student training.

The teacher's targets are stored sparsely: per frame its top-k senone ids and their
logits, sorted by logit (DESIGN.md, "Soft labels"). Targets for any k' <= k and
temperature T are derived here, when read, so one labelling pass serves a k x T sweep.
"""

import jax
import jax.numpy as jnp


def soft_targets(teacher_logits, top_k: int | None = None, temperature: float = 1.0):
    """Teacher probabilities over its kept ids: softmax(logits[..., :k'] / T).

    Args:
      teacher_logits: [batch, frames, k] teacher logits sorted in decreasing order.
      top_k: k' <= k ids to keep; None keeps all k.
      temperature: T > 0; larger T flattens the distribution.

    Returns:
      [batch, frames, k'] float32 probabilities summing to 1 over the last axis.
    """
    k = teacher_logits.shape[-1]
    top_k = k if top_k is None else top_k
    if not 1 <= top_k <= k:
        raise ValueError(f"soft_targets: top_k={top_k} but the soft labels keep k={k}.")
    if temperature <= 0:
        raise ValueError(f"soft_targets: temperature must be > 0, got {temperature}.")
    logits = teacher_logits[..., :top_k].astype(jnp.float32) / temperature
    return jax.nn.softmax(logits, axis=-1)


def soft_cross_entropy(logits, soft_ids, soft_probs, paddings):
    """Mean soft-target cross-entropy over real frames.

      loss = sum_{b,t} m_bt * (-sum_k p_btk * log softmax(logits_bt)[ids_btk]) / sum m_bt

    with m_bt = 1 - paddings_bt and p the teacher's top-k probabilities (see
    `soft_targets`). The student's softmax is over all senones; only the teacher's kept
    ids carry target mass. Accuracy is the fraction of real frames where the student's
    argmax equals the teacher's top-1 id (ids are sorted by teacher logit).

    Args:
      logits: [batch, frames, senones] student scores.
      soft_ids: [batch, frames, k] int teacher senone ids.
      soft_probs: [batch, frames, k] target probabilities, summing to 1 over k.
      paddings: [batch, frames], 1.0 = pad.

    Returns:
      (loss, accuracy, num_frames): float32 scalars.
    """
    logits = logits.astype(jnp.float32)
    mask = 1.0 - paddings.astype(jnp.float32)
    soft_ids = soft_ids.astype(jnp.int32)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_probs, soft_ids, axis=-1)
    per_frame = -jnp.sum(soft_probs.astype(jnp.float32) * picked, axis=-1)
    num_frames = jnp.sum(mask)
    denominator = jnp.maximum(num_frames, 1.0)
    loss = jnp.sum(per_frame * mask) / denominator
    correct = (jnp.argmax(logits, axis=-1) == soft_ids[..., 0]).astype(jnp.float32)
    accuracy = jnp.sum(correct * mask) / denominator
    return loss, accuracy, num_frames
