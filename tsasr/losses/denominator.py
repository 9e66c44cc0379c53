"""The LF-MMI denominator forward-backward on one shared graph, compiled for speed.

Kaldi's denominator computation: scaled probability space, renormalised every frame, one
graph shared by the whole batch, states as rows of [states, batch] arrays. What makes it
cheap is a host-side compilation of the graph (`DenominatorGraph.compile`) into a form
whose per-frame work is mostly dense:

1. State labels. Every arc into a state scores the same senone (the denominators of
   tsasr.hmm.den_graph are built that way; any other graph has its states split by
   incoming senone, the copies sharing their outgoing arcs), so the emission multiplies
   states, not arcs:  alpha_{t+1} = e_t[label] * pre_t,  pre_t(d) = sum_{a -> d} w_a alpha_t(src a).
2. Dense arcs. Self-loops d -> d and arcs d-1 -> d (an HMM's forward transition when its
   states are numbered in order) are elementwise products and one shifted copy.
3. Source classes. The remaining (sparse) arcs leave from states that often share their
   whole set of outgoing arcs: the last states of HMM chains that differ only in their
   left phone. Such states are summed into one class first and only each class's arcs
   are gathered (15k instead of 44k on a 4-gram graph over 40 phones), which matters
   because a gathered row costs ~15 ns on CPU against ~1 ns for an elementwise one.

Leaky HMM (Kaldi chain): after each frame a fraction eta of the forward mass is added to
every state in proportion to the leak distribution. Gradients: d log Z / d x[t, k] is the
senone occupancy, from a backward recursion over the stored pre-emission masses, through
a custom VJP (memory O(frames x states x batch), no autodiff through the scan).

This module must not know about phone LMs, trees or models.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from tsasr.losses.fsa import Fsa


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=[
        "label",
        "loop_weight",
        "shift_weight",
        "member",
        "member_class",
        "fwd_class",
        "fwd_dst",
        "fwd_weight",
        "bwd_class",
        "bwd_dst",
        "bwd_weight",
        "start",
        "final",
        "origin",
    ],
    meta_fields=["num_states", "num_classes"],
)
@dataclasses.dataclass(frozen=True)
class DenominatorGraph:
    """A shared denominator graph compiled for `forward_backward` (probabilities, not logs).

    label: [states] senone scored on entering each state.
    loop_weight, shift_weight: [states] probability of the arc d -> d and of d-1 -> d.
    member, member_class: states with sparse outgoing arcs and their class (sorted by class).
    fwd_class, fwd_dst, fwd_weight: the classes' arcs sorted by destination;
    bwd_*: the same arcs sorted by class.
    start, final: [states] probabilities.
    origin: [original states] the compiled state that stands for each original state
      (where its leak mass goes).
    """

    label: jax.Array
    loop_weight: jax.Array
    shift_weight: jax.Array
    member: jax.Array
    member_class: jax.Array
    fwd_class: jax.Array
    fwd_dst: jax.Array
    fwd_weight: jax.Array
    bwd_class: jax.Array
    bwd_dst: jax.Array
    bwd_weight: jax.Array
    start: jax.Array
    final: jax.Array
    origin: jax.Array
    num_states: int
    num_classes: int

    @classmethod
    def compile(cls, fsa: Fsa, dtype=np.float32) -> DenominatorGraph:
        """Compiles an unbatched `Fsa` with concrete arrays (host side, once per graph)."""
        if fsa.is_batched:
            raise ValueError("DenominatorGraph.compile: the denominator graph is shared, not batched.")
        try:
            src, dst, label = (np.asarray(a, np.int64) for a in (fsa.src, fsa.dst, fsa.label))
            weight = np.exp(np.asarray(fsa.log_weight, np.float64))
            start, final = np.exp(np.asarray(fsa.start, np.float64)), np.exp(np.asarray(fsa.final, np.float64))
        except jax.errors.TracerArrayConversionError as error:
            raise TypeError(
                "DenominatorGraph.compile needs the graph's arrays, not traced values: compile it outside "
                "jit (DenominatorGraph.compile(fsa)) and close over the result."
            ) from error
        keep = weight > 0
        src, dst, label, weight = src[keep], dst[keep], label[keep], weight[keep]
        n = len(start)

        # 1. Split states by incoming senone: copy (d, l) for each label l of an arc into d,
        #    plus a copy without label for start states and states nothing enters. Copies of
        #    a state are consecutive, so an in-order graph stays in order.
        pairs = np.unique(np.stack([dst, label], 1), axis=0)  # sorted by (state, label)
        entered = np.zeros(n, bool)
        entered[pairs[:, 0]] = True
        bare = np.flatnonzero((start > 0) | ~entered)
        copy_state = np.concatenate([bare, pairs[:, 0]])
        copy_label = np.concatenate([np.full(len(bare), -1), pairs[:, 1]])
        order = np.lexsort((copy_label, copy_state))
        copy_state, copy_label = copy_state[order], copy_label[order]
        num_states = len(copy_state)
        first_copy = np.searchsorted(copy_state, np.arange(n))
        copies_per_state = np.bincount(copy_state, minlength=n)
        # Arc (s -> d, l) becomes (c -> (d, l)) for every copy c of s.
        span = int(label.max(initial=0)) + 2
        target = np.searchsorted(copy_state * span + copy_label + 1, dst * span + label + 1)
        repeat = copies_per_state[src]
        arc_src = np.repeat(first_copy[src], repeat) + _ranges(repeat)
        arc_dst = np.repeat(target, repeat)
        arc_weight = np.repeat(weight, repeat)
        state_label = np.maximum(copy_label, 0)
        new_start = np.where(copy_label < 0, start[copy_state], 0.0)
        new_final = final[copy_state]

        # Parallel arcs (same source and destination, hence same senone) add up.
        key = arc_src * num_states + arc_dst
        key, inverse = np.unique(key, return_inverse=True)
        arc_weight = np.bincount(inverse, weights=arc_weight)
        arc_src, arc_dst = key // num_states, key % num_states

        # 2. Dense arcs.
        loop = arc_src == arc_dst
        shift = arc_dst == arc_src + 1
        loop_weight = np.zeros(num_states)
        loop_weight[arc_dst[loop]] = arc_weight[loop]
        shift_weight = np.zeros(num_states)
        shift_weight[arc_dst[shift]] = arc_weight[shift]

        # 3. Sparse arcs, grouped by source class (identical outgoing sparse arcs).
        sparse = ~loop & ~shift
        s_src, s_dst, s_weight = arc_src[sparse], arc_dst[sparse], arc_weight[sparse]
        by_src = np.lexsort((s_weight, s_dst, s_src))
        s_src, s_dst, s_weight = s_src[by_src], s_dst[by_src], s_weight[by_src]
        sources, begin = np.unique(s_src, return_index=True)
        end = np.append(begin[1:], len(s_src))
        signatures: dict[bytes, int] = {}
        source_class = np.empty(len(sources), np.int64)
        class_first = []
        for i, (b, e) in enumerate(zip(begin, end)):
            signature = s_dst[b:e].tobytes() + s_weight[b:e].tobytes()
            c = signatures.setdefault(signature, len(signatures))
            if c == len(class_first):
                class_first.append(i)
            source_class[i] = c
        # Each class keeps its first source's arcs; classes are numbered in order of first
        # source, so those arcs come out sorted by class.
        arc_source = np.repeat(np.arange(len(sources)), end - begin)
        representative = np.zeros(len(sources), bool)
        representative[class_first] = True
        chosen = representative[arc_source]
        c_class, c_dst, c_weight = source_class[arc_source[chosen]], s_dst[chosen], s_weight[chosen]
        by_class = np.argsort(source_class, kind="stable")
        by_dst = np.argsort(c_dst, kind="stable")

        def ints(a):
            return jnp.asarray(np.asarray(a, np.int32))

        def floats(a):
            return jnp.asarray(np.asarray(a, dtype))

        return cls(
            label=ints(state_label),
            loop_weight=floats(loop_weight),
            shift_weight=floats(shift_weight),
            member=ints(sources[by_class]),
            member_class=ints(source_class[by_class]),
            fwd_class=ints(c_class[by_dst]),
            fwd_dst=ints(c_dst[by_dst]),
            fwd_weight=floats(c_weight[by_dst]),
            bwd_class=ints(c_class),
            bwd_dst=ints(c_dst),
            bwd_weight=floats(c_weight),
            start=floats(new_start),
            final=floats(new_final),
            origin=ints(first_copy),
            num_states=int(num_states),
            num_classes=len(class_first),
        )

    def leak(self, leak_log_probs, dtype):
        """Leak probabilities [states] of the compiled graph from those of the original."""
        if leak_log_probs is None:
            return jnp.zeros((self.num_states,), dtype)
        probs = jnp.exp(jnp.asarray(leak_log_probs, dtype))
        return jnp.zeros((self.num_states,), dtype).at[self.origin].add(probs)

    def transition(self, alpha):
        """pre(d) = sum_{a -> d} w_a alpha(src a) for alpha [states, batch]."""
        shifted = jnp.concatenate([jnp.zeros_like(alpha[:1]), alpha[:-1]])
        pre = self.loop_weight[:, None] * alpha + self.shift_weight[:, None] * shifted
        if self.num_classes:
            classes = jax.ops.segment_sum(
                alpha[self.member], self.member_class, self.num_classes, indices_are_sorted=True
            )
            arcs = classes[self.fwd_class] * self.fwd_weight[:, None]
            pre = pre + jax.ops.segment_sum(arcs, self.fwd_dst, self.num_states, indices_are_sorted=True)
        return pre

    def transition_transpose(self, u):
        """The transpose of `transition`: out(s) = sum_{a from s} w_a u(dst a)."""
        shifted = self.shift_weight[:, None] * u
        out = self.loop_weight[:, None] * u + jnp.concatenate([shifted[1:], jnp.zeros_like(u[:1])])
        if self.num_classes:
            arcs = u[self.bwd_dst] * self.bwd_weight[:, None]
            classes = jax.ops.segment_sum(arcs, self.bwd_class, self.num_classes, indices_are_sorted=True)
            out = out.at[self.member].add(classes[self.member_class])
        return out


def _ranges(counts):
    """[0, 1, .., c0-1, 0, 1, .., c1-1, ...] for counts [c0, c1, ...]."""
    total = int(np.sum(counts))
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total) - starts


def _forward(log_likes, paddings, graph: DenominatorGraph, leak, eta: float):
    """Scaled forward pass. Returns log_z [batch], the pre-emission masses [frames, states,
    batch] (each from an alpha normalised to sum 1) and the emissions [frames, senones, batch]."""
    batch = log_likes.shape[0]
    dtype = log_likes.dtype
    shift = jnp.max(log_likes, axis=-1)  # [batch, frames]; keeps exp() <= 1
    emissions = jnp.exp(log_likes - shift[..., None]).transpose(1, 2, 0)  # [frames, senones, batch]
    pad_steps = paddings.T.astype(bool)  # [frames, batch]
    start_total = graph.start.sum()
    alpha0 = jnp.broadcast_to((graph.start / start_total)[:, None], (graph.num_states, batch)).astype(dtype)
    log_scale0 = jnp.full((batch,), jnp.log(start_total), dtype)

    def step(carry, inputs):
        alpha, log_scale = carry
        emission, frame_shift, pad = inputs
        pre = graph.transition(alpha)
        new = emission[graph.label] * pre
        if eta > 0:
            new = new + eta * new.sum(0, keepdims=True) * leak[:, None]
        total = new.sum(0)
        ok = total > 0
        new = new / jnp.where(ok, total, 1.0)
        new_scale = log_scale + jnp.where(ok, jnp.log(jnp.where(ok, total, 1.0)), -jnp.inf) + frame_shift
        new = jnp.where(pad[None, :], alpha, new)
        new_scale = jnp.where(pad, log_scale, new_scale)
        return (new, new_scale), pre

    (alpha_last, log_scale), pres = jax.lax.scan(step, (alpha0, log_scale0), (emissions, shift.T, pad_steps))
    log_z = log_scale + jnp.log((alpha_last * graph.final[:, None]).sum(0))
    return log_z, pres, emissions


def _backward(pres, emissions, paddings, graph: DenominatorGraph, leak, eta: float):
    """Scaled backward pass: occupancies [batch, frames, senones], each real frame's summing
    to 1 (exact: sum_d pre_t(d) e_t(label d) beta_{t+1}(d) = Z for every t, so normalising
    per frame removes the scales)."""
    num_senones = emissions.shape[1]
    batch = pres.shape[-1]
    pad_steps = paddings.T.astype(bool)
    final = graph.final
    beta_last = jnp.broadcast_to((final / jnp.maximum(final.sum(), 1e-30))[:, None], (graph.num_states, batch))

    def step(beta, inputs):
        pre, emission, pad = inputs
        if eta > 0:  # transpose of the leak
            beta = beta + eta * (leak[:, None] * beta).sum(0, keepdims=True)
        u = emission[graph.label] * beta
        occupancy = jax.ops.segment_sum(pre * u, graph.label, num_senones)  # [senones, batch]
        total = occupancy.sum(0)
        occupancy = occupancy / jnp.where(total > 0, total, 1.0)
        new = graph.transition_transpose(u)
        norm = new.sum(0)
        new = new / jnp.where(norm > 0, norm, 1.0)
        return new, (occupancy, pad)

    def masked_step(beta, inputs):
        new, (occupancy, pad) = step(beta, inputs)
        new = jnp.where(pad[None, :], beta, new)
        return new, jnp.where(pad[None, :], 0.0, occupancy)

    _, occupancies = jax.lax.scan(masked_step, beta_last, (pres, emissions, pad_steps), reverse=True)
    return occupancies.transpose(2, 0, 1)


def _as_graph(graph, dtype) -> DenominatorGraph:
    """The compiled graph with its probabilities in `dtype` (the scan's carries must match)."""
    if not isinstance(graph, DenominatorGraph):
        return DenominatorGraph.compile(graph, dtype)
    floats = ("loop_weight", "shift_weight", "fwd_weight", "bwd_weight", "start", "final")
    return dataclasses.replace(graph, **{f: jnp.asarray(getattr(graph, f), dtype) for f in floats})


def forward_backward(log_likes, paddings, graph, leak_log_probs=None, leaky_hmm_coefficient: float = 0.0):
    """Denominator log Z [batch] and senone occupancies [batch, frames, senones].

    Args:
      log_likes: [batch, frames, senones] network outputs.
      paddings: [batch, frames], 1.0 = pad (skipped).
      graph: a `DenominatorGraph`, or an unbatched `Fsa` with concrete arrays (compiled here).
      leak_log_probs: [original states] leak distribution (fsa.initial_log_probs), needed
        when leaky_hmm_coefficient > 0.
      leaky_hmm_coefficient: eta of the leaky HMM; 0 disables it.

    An utterance with no path (possible only without leak) gets log_z = -inf and zero
    occupancies.
    """
    eta = float(leaky_hmm_coefficient)
    log_likes, paddings = jnp.asarray(log_likes), jnp.asarray(paddings)
    graph = _as_graph(graph, log_likes.dtype)
    leak = graph.leak(leak_log_probs, log_likes.dtype)
    log_z, pres, emissions = _forward(log_likes, paddings, graph, leak, eta)
    occupancies = _backward(pres, emissions, paddings, graph, leak, eta)
    occupancies = jnp.where(jnp.isfinite(log_z)[:, None, None], occupancies, 0.0)
    return log_z, occupancies


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _log_partition(log_likes, paddings, graph, leak, eta):
    return _forward(log_likes, paddings, graph, leak, eta)[0]


def _log_partition_fwd(log_likes, paddings, graph, leak, eta):
    # Residuals: the pre-emission masses and emissions, linear in frames; the backward
    # recursion runs only when the gradient is asked for.
    log_z, pres, emissions = _forward(log_likes, paddings, graph, leak, eta)
    return log_z, (log_z, pres, emissions, paddings, graph, leak)


def _log_partition_bwd(eta, residuals, cotangent):
    log_z, pres, emissions, paddings, graph, leak = residuals
    occupancies = _backward(pres, emissions, paddings, graph, leak, eta)
    scale = jnp.where(jnp.isfinite(log_z), cotangent, 0.0)
    return (scale[:, None, None] * occupancies, None, None, None)


_log_partition.defvjp(_log_partition_fwd, _log_partition_bwd)


def log_partition(log_likes, paddings, graph, leak_log_probs=None, leaky_hmm_coefficient: float = 0.0):
    """Denominator log Z [batch], differentiable w.r.t. log_likes (gradient = the
    denominator occupancies). Arguments as `forward_backward`."""
    log_likes = jnp.asarray(log_likes)
    graph = _as_graph(graph, log_likes.dtype)
    leak = graph.leak(leak_log_probs, log_likes.dtype)
    return _log_partition(log_likes, jnp.asarray(paddings), graph, leak, float(leaky_hmm_coefficient))
