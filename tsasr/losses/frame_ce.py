"""Frame-level cross-entropy on integer senone targets (alignments).

Pure function of logits, targets and paddings; no model, no optimizer. Used for the
teacher's frame-level training and for dev frame accuracy.
"""

import jax
import jax.numpy as jnp


def frame_cross_entropy(logits, senones, paddings):
    """Mean cross-entropy over real frames, and frame accuracy.

      loss = sum_{b,t} m_bt * (-log softmax(logits_bt)[senones_bt]) / sum_{b,t} m_bt
      accuracy = sum_{b,t} m_bt * [argmax logits_bt == senones_bt] / sum_{b,t} m_bt

    with m_bt = 1 - paddings_bt. Computed in float32 whatever the logits' dtype.

    Args:
      logits: [batch, frames, senones] unnormalised scores.
      senones: [batch, frames] int target senone ids (any value on padded frames).
      paddings: [batch, frames], 1.0 = pad.

    Returns:
      (loss, accuracy, num_frames): float32 scalars; num_frames is sum(m), the
      denominator, so callers can weight means across batches.
    """
    logits = logits.astype(jnp.float32)
    mask = 1.0 - paddings.astype(jnp.float32)
    senones = jnp.where(mask > 0, senones, 0).astype(jnp.int32)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    target_log_probs = jnp.take_along_axis(log_probs, senones[..., None], axis=-1)[..., 0]
    num_frames = jnp.sum(mask)
    denominator = jnp.maximum(num_frames, 1.0)
    loss = -jnp.sum(target_log_probs * mask) / denominator
    correct = (jnp.argmax(logits, axis=-1) == senones).astype(jnp.float32)
    accuracy = jnp.sum(correct * mask) / denominator
    return loss, accuracy, num_frames
