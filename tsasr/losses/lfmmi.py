"""Lattice-free MMI (Povey et al., Interspeech 2016) in JAX: forward-backward over senone
FSAs, the chain objective and its regularisers.

For an utterance with network outputs x[t, k] (pseudo log-likelihoods, [frames,
senones]) and an epsilon-free acceptor G (tsasr.losses.fsa.Fsa), the log-partition is

  log Z_G(x) = log sum_{paths pi of T arcs} exp( start(pi_0) + sum_t (w(a_t) + x[t, label(a_t)])
                                                 + final(pi_T) )

computed by the forward recursion alpha_0 = start,
  alpha_{t+1}(d) = logsumexp_{a: dst(a)=d} alpha_t(src a) + w(a) + x[t, label a],
and log Z = logsumexp_s alpha_T(s) + final(s). Its gradient is the senone occupancy
  d log Z / d x[t, k] = gamma_t(k) = sum_{a: label a = k} exp(alpha_t(src a) + w(a)
                          + x[t, k] + beta_{t+1}(dst a) - log Z),
with beta the backward recursion. The MMI objective of one utterance is
  F = log Z_num(x) - log Z_den(x),  dF/dx = gamma_num - gamma_den.

Two implementations, chosen by what each graph needs:
  * `forward_backward` / `log_partition`: log space with a per-state max (exact for any
    dynamic range), for batched per-utterance numerators with optional frame masks
    (the tolerance constraint). Numerators are sparse: a surviving path may sit
    far below the best partial path, which scaled probabilities would lose.
  * `den_forward_backward` / `den_log_partition`: one shared denominator graph in
    probability space, renormalised every frame (Kaldi's denominator computation), on
    the graph compiled by tsasr.losses.denominator so that most of each frame's work is
    elementwise and no arc needs an exp, which is what makes the denominator
    affordable. Frame-wise shifts of x keep exp() in range.

Both: jax.lax.scan over frames, arcs reduced with segment sums, padded frames
(paddings = 1.0) skipped wherever they are, gradients through jax.custom_vjp whose
backward pass runs the beta recursion over stored alphas (memory O(frames x states),
no autodiff through the scan). Leaky HMM (Kaldi chain): after each frame a fraction
`leaky_hmm_coefficient` of the total forward mass is added to every state in
proportion to `leak_log_probs` (Kaldi's initial probabilities),
  alpha_{t+1} <- alpha_{t+1} + eta * (sum_s alpha_{t+1}(s)) * p_leak,
which lets the denominator leave any state at any frame and so softens chunk edges.

This module must not know about phone LMs, trees, models or optimizers.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from tsasr.losses import denominator
from tsasr.losses.fsa import Fsa

# ---------------------------------------------------------------------------------------
# Log-space forward-backward (numerators, and any graph when exactness matters most)


def _safe_max(x):
    """Segment max with empty segments (-inf) mapped to 0 so x - max stays finite/-inf."""
    return jnp.where(jnp.isfinite(x), x, 0.0)


def _flatten(fsa: Fsa, batch: int, num_senones: int):
    """Batched (or shared, replicated) graph as one disjoint union over batch * states.

    Returns flat src, dst, senone index (into x_t flattened [batch * senones]), arc
    log-weights, start, final (all [batch * ...]) and the utterance of every flat state.
    """
    if not fsa.is_batched:
        fsa = jax.tree.map(lambda a: jnp.broadcast_to(a, (batch,) + a.shape), fsa)
    s, k = fsa.num_states, num_senones
    offsets = jnp.arange(batch, dtype=jnp.int32)[:, None]
    src = (fsa.src + offsets * s).reshape(-1)
    dst = (fsa.dst + offsets * s).reshape(-1)
    label = (fsa.label + offsets * k).reshape(-1)
    state_utt = jnp.repeat(jnp.arange(batch, dtype=jnp.int32), s)
    return (src, dst, label, fsa.log_weight.reshape(-1), fsa.start.reshape(-1), fsa.final.reshape(-1), state_utt)


def _segment_logsumexp(values, segments, num_segments):
    peak = _safe_max(jax.ops.segment_max(values, segments, num_segments))
    total = jax.ops.segment_sum(jnp.exp(values - peak[segments]), segments, num_segments)
    return peak + jnp.log(total)


def _forward_backward_log(
    log_likes, paddings, fsa: Fsa, allowed, leak_log_probs, leaky_hmm_coefficient: float, want_occupancies: bool
):
    """log Z [batch] and, if asked, occupancies [batch, frames, senones] in log space."""
    batch, frames, num_senones = log_likes.shape
    dtype = log_likes.dtype
    src, dst, label, weight, start, final, state_utt = _flatten(fsa.astype(dtype), batch, num_senones)
    num_flat = batch * fsa.num_states
    # Shifting each frame by its max keeps |alpha|, |beta| near the size of one path's
    # *relative* score, so float32 rounding in alpha + beta - log Z stays small on long
    # utterances; the shifts add back exactly into log Z (every path takes one arc per frame).
    shift = jnp.max(log_likes, axis=-1)  # [batch, frames]
    shift = jnp.where(paddings.astype(bool), 0.0, shift)
    log_likes = log_likes - shift[..., None]
    x_steps = log_likes.transpose(1, 0, 2).reshape(frames, -1)  # [frames, batch*senones]
    pad_steps = paddings.T.astype(bool)  # [frames, batch]
    if allowed is None:
        mask_steps = jnp.ones((frames, 1), bool)
    else:
        mask_steps = allowed.transpose(1, 0, 2).reshape(frames, -1)  # [frames, batch*states]
    leaky = leaky_hmm_coefficient > 0
    if leaky:
        leak = jnp.broadcast_to(jnp.asarray(leak_log_probs, dtype), (batch, fsa.num_states))
        leak = leak.reshape(-1) + jnp.log(jnp.asarray(leaky_hmm_coefficient, dtype))

    def per_utt_logsumexp(values):
        return _segment_logsumexp(values, state_utt, batch)

    def forward_step(alpha, inputs):
        x, pad, mask = inputs
        new = _segment_logsumexp(alpha[src] + weight + x[label], dst, num_flat)
        new = jnp.where(mask, new, -jnp.inf)
        if leaky:
            new = jnp.logaddexp(new, per_utt_logsumexp(new)[state_utt] + leak)
        new = jnp.where(pad[state_utt], alpha, new)
        return new, alpha

    alpha_last, alphas = jax.lax.scan(forward_step, start, (x_steps, pad_steps, mask_steps))
    log_z = per_utt_logsumexp(alpha_last + final)
    if not want_occupancies:
        return log_z + shift.sum(1), None
    valid = jnp.isfinite(log_z)
    safe_log_z = jnp.where(valid, log_z, 0.0)

    def backward_step(beta, inputs):
        alpha, x, pad, mask = inputs
        if leaky:  # transpose of the leak: beta(s) + eta * sum_s' p(s') beta(s')
            beta_in = jnp.logaddexp(beta, per_utt_logsumexp(beta + leak)[state_utt])
        else:
            beta_in = beta
        beta_in = jnp.where(mask, beta_in, -jnp.inf)
        arc_score = weight + x[label]
        arc_post = alpha[src] + arc_score + beta_in[dst] - safe_log_z[state_utt[src]]
        occupancy = jax.ops.segment_sum(jnp.exp(arc_post), label, batch * num_senones)
        new_beta = _segment_logsumexp(arc_score + beta_in[dst], src, num_flat)
        new_beta = jnp.where(pad[state_utt], beta, new_beta)
        occupancy = occupancy.reshape(batch, num_senones)
        # Each real frame's occupancies sum to 1 in exact arithmetic; renormalising removes
        # the float32 drift of alpha + beta - log Z accumulated over long utterances.
        total = occupancy.sum(1, keepdims=True)
        occupancy = occupancy / jnp.where(total > 0, total, 1.0)
        occupancy = jnp.where((pad | ~valid)[:, None], 0.0, occupancy)
        return new_beta, occupancy

    _, occupancies = jax.lax.scan(backward_step, final, (alphas, x_steps, pad_steps, mask_steps), reverse=True)
    return log_z + shift.sum(1), occupancies.transpose(1, 0, 2)


def forward_backward(
    log_likes, paddings, fsa: Fsa, allowed=None, leak_log_probs=None, leaky_hmm_coefficient: float = 0.0
):
    """Log-partition and senone occupancies of a batch on its graphs, in log space.

    Args:
      log_likes: [batch, frames, senones] network outputs x (float32 or float64).
      paddings: [batch, frames], 1.0 = pad (skipped: alpha carried through unchanged).
      fsa: one graph shared by the batch, or a batch of graphs ([batch, arcs] fields).
      allowed: optional [batch, frames, states] bool; False forbids occupying a state
        after consuming frame t (the numerator's tolerance window).
      leak_log_probs: [states] or [batch, states] leak distribution (needed when
        leaky_hmm_coefficient > 0).
      leaky_hmm_coefficient: eta of the leaky HMM; 0 disables it.

    Returns:
      (log_z [batch], occupancies [batch, frames, senones]); an utterance with no path
      has log_z = -inf and all-zero occupancies (never NaN). Not differentiable itself:
      use `log_partition` for gradients.
    """
    return _forward_backward_log(
        jnp.asarray(log_likes),
        jnp.asarray(paddings),
        fsa,
        allowed,
        leak_log_probs,
        leaky_hmm_coefficient,
        want_occupancies=True,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _log_partition(log_likes, paddings, fsa, allowed, leak_log_probs, leaky_hmm_coefficient):
    return _forward_backward_log(
        log_likes, paddings, fsa, allowed, leak_log_probs, leaky_hmm_coefficient, want_occupancies=False
    )[0]


def _log_partition_fwd(log_likes, paddings, fsa, allowed, leak_log_probs, leaky_hmm_coefficient):
    # The occupancies are the whole gradient; computing them here keeps the residuals to
    # one [batch, frames, senones] array instead of the per-frame alphas.
    log_z, occupancies = _forward_backward_log(
        log_likes, paddings, fsa, allowed, leak_log_probs, leaky_hmm_coefficient, True
    )
    return log_z, occupancies


def _log_partition_bwd(leaky_hmm_coefficient, occupancies, cotangent):
    del leaky_hmm_coefficient
    return (cotangent[:, None, None] * occupancies, None, None, None, None)


_log_partition.defvjp(_log_partition_fwd, _log_partition_bwd)


def log_partition(log_likes, paddings, fsa: Fsa, allowed=None, leak_log_probs=None, leaky_hmm_coefficient: float = 0.0):
    """log Z [batch] of `forward_backward`, differentiable w.r.t. log_likes with
    d log Z_b / d x[b, t, k] = gamma_b[t, k] (custom VJP; the scan is not differentiated).
    Impossible utterances give log_z = -inf and zero gradient."""
    return _log_partition(
        jnp.asarray(log_likes), jnp.asarray(paddings), fsa, allowed, leak_log_probs, float(leaky_hmm_coefficient)
    )


# ---------------------------------------------------------------------------------------
# Denominator: one shared graph, probability space with per-frame renormalisation
# (tsasr.losses.denominator: the graph compiled so that most per-frame work is dense)

DenominatorGraph = denominator.DenominatorGraph
den_forward_backward = denominator.forward_backward
den_log_partition = denominator.log_partition


# ---------------------------------------------------------------------------------------
# The chain objective and Kaldi's regularisers


def output_l2(outputs, paddings):
    """Kaldi chain's output L2 term per utterance: 0.5 * sum_{t,k} m_t * y[t, k]^2 with
    m_t = 1 - paddings; outputs [batch, frames, senones] -> [batch]. The loss adds
    l2_regularize times it (Kaldi's --l2-regularize)."""
    mask = 1.0 - paddings.astype(outputs.dtype)
    return 0.5 * jnp.sum(jnp.square(outputs) * mask[..., None], axis=(1, 2))


def xent_regularizer(xent_logits, numerator_occupancies, paddings):
    """Kaldi chain's cross-entropy regulariser per utterance: the cross-entropy of a
    separate softmax output against the numerator posteriors,
      -sum_{t,k} m_t * gamma_num[t, k] * log_softmax(xent_logits[t])[k],
    with gamma_num treated as constant. [batch, frames, senones] x2, [batch, frames] ->
    [batch]. The loss adds xent_regularize times it (Kaldi's --xent-regularize)."""
    mask = 1.0 - paddings.astype(jnp.float32)
    log_probs = jax.nn.log_softmax(xent_logits.astype(jnp.float32), axis=-1)
    targets = jax.lax.stop_gradient(numerator_occupancies).astype(jnp.float32)
    return -jnp.sum(targets * log_probs * mask[..., None], axis=(1, 2))


def lfmmi_loss(
    outputs,
    paddings,
    numerator: Fsa,
    denominator: Fsa | DenominatorGraph,
    *,
    numerator_allowed=None,
    den_leak_log_probs=None,
    leaky_hmm_coefficient: float = 0.1,
    l2_regularize: float = 0.0,
    xent_logits=None,
    xent_regularize: float = 0.0,
):
    """The Kaldi chain loss of a batch, per frame, with its measurements.

      F_b = log Z_num,b(y) - log Z_den(y)          (MMI objective of utterance b)
      loss = sum_b v_b * (-F_b + l2_regularize * L2_b + xent_regularize * CE_b) / N
    where y = outputs, v_b = 1 if both log Z are finite (else the utterance is skipped
    and counted), N = sum_b v_b * frames_b. The gradient w.r.t. outputs is
    v_b * (gamma_den - gamma_num + l2_regularize * y) / N, the numerator occupancies
    (from one log-space forward-backward, also the CE targets) entering through a
    surrogate term whose value is 0 and whose gradient is gamma_num.

    Args:
      outputs: [batch, frames, senones] chain output of the network.
      paddings: [batch, frames], 1.0 = pad.
      numerator: batched numerator graphs ([batch, arcs] fields).
      denominator: the shared denominator graph (compiled once with DenominatorGraph.compile,
        or an Fsa compiled at trace time).
      numerator_allowed: optional [batch, frames, num_states] tolerance masks.
      den_leak_log_probs: [den states] leak distribution (fsa.initial_log_probs).
      leaky_hmm_coefficient: Kaldi's --leaky-hmm-coefficient (0.1 by default there too).
      l2_regularize: Kaldi's --l2-regularize on the chain output.
      xent_logits: [batch, frames, senones] output of the CE branch, or None.
      xent_regularize: Kaldi's --xent-regularize.

    Returns:
      (loss, measurements): float32 scalar loss; measurements holds `objective` (mean
      MMI objective per valid frame), `num_log_z`/`den_log_z` [batch], `valid` [batch]
      float, `skipped` (count of skipped utterances), `frames` (N), and the regularisers.
    """
    outputs = outputs.astype(jnp.float32)
    mask = 1.0 - paddings.astype(jnp.float32)
    num_log_z, num_occupancies = forward_backward(
        jax.lax.stop_gradient(outputs), paddings, numerator, allowed=numerator_allowed
    )
    den_log_z = den_log_partition(outputs, paddings, denominator, den_leak_log_probs, leaky_hmm_coefficient)
    valid = jnp.isfinite(num_log_z) & jnp.isfinite(den_log_z)
    weight = valid.astype(jnp.float32)
    frames = jnp.sum(mask.sum(1) * weight)
    normaliser = jnp.maximum(frames, 1.0)
    # Value num_log_z, gradient gamma_num: the occupancies are computed once and serve as
    # both the numerator's gradient and the cross-entropy regulariser's targets.
    num_surrogate = jnp.where(valid, num_log_z, 0.0) + jnp.sum(
        num_occupancies * (outputs - jax.lax.stop_gradient(outputs)), axis=(1, 2)
    )
    objective = num_surrogate - jnp.where(valid, den_log_z, 0.0)
    l2 = output_l2(outputs, paddings)
    per_utt = -objective + l2_regularize * l2
    measurements = {}
    if xent_logits is not None and xent_regularize > 0:
        xent = xent_regularizer(xent_logits, num_occupancies, paddings)
        per_utt = per_utt + xent_regularize * xent
        measurements["xent"] = jnp.sum(weight * xent) / normaliser
    loss = jnp.sum(jnp.where(valid, per_utt, 0.0)) / normaliser
    measurements.update(
        objective=jax.lax.stop_gradient(jnp.sum(jnp.where(valid, objective, 0.0)) / normaliser),
        num_log_z=num_log_z,
        den_log_z=jax.lax.stop_gradient(den_log_z),
        valid=weight,
        skipped=jnp.sum(1.0 - weight),
        frames=frames,
        l2=jax.lax.stop_gradient(jnp.sum(weight * l2) / normaliser),
    )
    return loss, measurements
