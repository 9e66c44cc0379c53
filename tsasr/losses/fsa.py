"""Compiled acceptors over senone ids for sequence training, and numerator graphs.

An `Fsa` is a weighted acceptor held as arrays so JAX can run forward-backward on it:
arc i goes src[i] -> dst[i], consumes one frame scored by senone label[i] and carries
log_weight[i] (a log-probability, not a cost); `start` and `final` are per-state
log-weights (-inf = not initial / not final). There are no epsilon arcs: every arc
consumes exactly one frame, so a path through an utterance of T frames has T arcs.

The same class holds one graph (arrays [arcs], [states]) or a batch of graphs padded to
a common size (arrays [batch, arcs], [batch, states]); padding arcs have
log_weight = -inf and padding states start = final = -inf, so they carry no mass.

Numerator graphs are built here from alignments (numpy, host side). This module must not
know about phone LMs, senone trees or models.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tsasr import fst as fst_lib

NEG_INF = -np.inf


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Fsa:
    """Epsilon-free weighted acceptor over senone ids, as arrays.

    Fields (a single graph; a batch has a leading [batch] axis on every field):
      src, dst: [arcs] int32 source and destination state of each arc.
      label: [arcs] int32 senone (pdf) id scored when the arc is taken.
      log_weight: [arcs] float arc log-probability.
      start: [states] float initial log-weight of each state.
      final: [states] float final log-weight of each state.
    """

    src: jax.Array | np.ndarray
    dst: jax.Array | np.ndarray
    label: jax.Array | np.ndarray
    log_weight: jax.Array | np.ndarray
    start: jax.Array | np.ndarray
    final: jax.Array | np.ndarray

    @property
    def num_states(self) -> int:
        return int(self.start.shape[-1])

    @property
    def num_arcs(self) -> int:
        return int(self.src.shape[-1])

    @property
    def is_batched(self) -> bool:
        return self.src.ndim == 2

    def astype(self, dtype) -> "Fsa":
        """Same graph with float fields in `dtype` (numpy arrays stay numpy)."""
        xp = np if isinstance(self.log_weight, np.ndarray) else jnp
        return dataclasses.replace(
            self,
            log_weight=xp.asarray(self.log_weight, dtype),
            start=xp.asarray(self.start, dtype),
            final=xp.asarray(self.final, dtype),
        )


def fsa_from_arcs(
    arcs: Iterable[tuple[int, int, int, float]],
    start: int | Mapping[int, float],
    final: Mapping[int, float],
    num_states: int | None = None,
) -> Fsa:
    """An `Fsa` from an openfst-like arc list.

    Args:
      arcs: (src, dst, senone, log_weight) tuples; log_weight is a log-probability
        (an openfst cost c is log_weight = -c).
      start: the start state (log-weight 0), or {state: log_weight} for several.
      final: {state: final log_weight}.
      num_states: total states; by default one more than the largest state mentioned.

    Returns:
      An unbatched `Fsa` of numpy arrays (int32 indices, float64 weights), arcs sorted by
      destination so segment reductions over destinations see sorted ids.
    """
    arcs = list(arcs)
    table = np.array(arcs, dtype=np.float64).reshape(-1, 4)
    src, dst, label = (table[:, i].astype(np.int64) for i in range(3))
    if (label < 0).any():
        raise ValueError("fsa_from_arcs: senone labels must be >= 0 (no epsilon arcs).")
    starts = {start: 0.0} if isinstance(start, (int, np.integer)) else dict(start)
    mentioned = [0] + list(starts) + list(final) + src.tolist() + dst.tolist()
    n = max(mentioned) + 1 if num_states is None else num_states
    if max(mentioned) >= n or min(mentioned) < 0:
        raise ValueError(f"fsa_from_arcs: state ids must lie in [0, {n}).")
    start_vec = np.full(n, NEG_INF)
    for s, w in starts.items():
        start_vec[s] = w
    final_vec = np.full(n, NEG_INF)
    for s, w in final.items():
        final_vec[s] = w
    order = np.argsort(dst, kind="stable")
    return Fsa(
        src=src[order].astype(np.int32),
        dst=dst[order].astype(np.int32),
        label=label[order].astype(np.int32),
        log_weight=table[order, 3].copy(),
        start=start_vec,
        final=final_vec,
    )


def fsa_from_kaldifst(fst, label_offset: int = -1) -> Fsa:
    """An `Fsa` from a kaldifst StdVectorFst acceptor whose input labels are senone + 1
    (the HCLG convention; `label_offset` maps them to senone ids). Costs become
    log-weights (-cost). Epsilon arcs are refused: remove them first (kaldifst.rmepsilon).
    Reads the FST's OpenFst text (tsasr.fst.read_text), so kaldifst itself is not imported."""
    arcs = fst_lib.read_text(str(fst))
    if not len(arcs.src) and not len(arcs.final_states):
        raise ValueError("fsa_from_kaldifst: the FST is empty.")
    if (arcs.ilabel == 0).any():
        raise ValueError("fsa_from_kaldifst: epsilon arc found; run kaldifst.rmepsilon first.")
    table = np.stack([arcs.src, arcs.dst, arcs.ilabel + label_offset, -arcs.cost], axis=1)
    finals = dict(zip(arcs.final_states.tolist(), (-arcs.final_costs).tolist()))
    return fsa_from_arcs(table, arcs.start, finals)


def stack_fsas(fsas: Sequence[Fsa], num_states: int | None = None, num_arcs: int | None = None) -> Fsa:
    """Pads unbatched graphs to common sizes and stacks them: fields [batch, arcs] and
    [batch, states]. Padding arcs are 0 -> 0 with senone 0 and log_weight -inf; padding
    states have start = final = -inf, so neither adds probability mass."""
    num_states = max(f.num_states for f in fsas) if num_states is None else num_states
    num_arcs = max(f.num_arcs for f in fsas) if num_arcs is None else num_arcs
    if any(f.num_states > num_states or f.num_arcs > num_arcs for f in fsas):
        raise ValueError("stack_fsas: a graph is larger than the requested padded size.")

    def pad(x, size, value):
        x = np.asarray(x)
        return np.concatenate([x, np.full(size - x.shape[0], value, x.dtype)])

    return Fsa(
        src=np.stack([pad(f.src, num_arcs, 0) for f in fsas]),
        dst=np.stack([pad(f.dst, num_arcs, 0) for f in fsas]),
        label=np.stack([pad(f.label, num_arcs, 0) for f in fsas]),
        log_weight=np.stack([pad(np.asarray(f.log_weight, np.float64), num_arcs, NEG_INF) for f in fsas]),
        start=np.stack([pad(np.asarray(f.start, np.float64), num_states, NEG_INF) for f in fsas]),
        final=np.stack([pad(np.asarray(f.final, np.float64), num_states, NEG_INF) for f in fsas]),
    )


def initial_log_probs(fsa: Fsa, iterations: int = 100) -> np.ndarray:
    """Kaldi chain's 'initial probabilities' of a denominator graph, used by the leaky HMM.

    Starting from `start`, the state distribution is propagated `iterations` times
    through the arc probabilities renormalised per source state (final weights ignored),
    and the distributions of all steps are averaged: an estimate of how often each state
    is occupied in the middle of an utterance. [states] log-probabilities summing to 1.
    """
    n = fsa.num_states
    weights = np.exp(np.asarray(fsa.log_weight, np.float64))
    out_mass = np.bincount(fsa.src, weights=weights, minlength=n)
    probs = weights / np.maximum(out_mass[fsa.src], 1e-300)
    current = np.exp(np.asarray(fsa.start, np.float64))
    current /= current.sum()
    total = np.zeros(n)
    for _ in range(iterations):
        current = np.bincount(fsa.dst, weights=current[fsa.src] * probs, minlength=n)
        mass = current.sum()
        if mass <= 0:
            break
        current /= mass  # mass leaks only where a state has no outgoing arcs
        total += current
    total = total if total.sum() > 0 else np.exp(np.asarray(fsa.start, np.float64))
    with np.errstate(divide="ignore"):
        return np.log(total / total.sum())


# ---------------------------------------------------------------------------------------
# Numerator graphs


def hmm_state_numerator(
    senones: Sequence[int], self_loop_log_prob: float | Sequence[float], forward_log_prob: float | Sequence[float]
) -> Fsa:
    """The full numerator of one utterance from its HMM state sequence.

    A left-to-right chain: state 0 is a non-emitting entry, state j (1..n) is the j-th
    HMM state with senone senones[j-1]. Arcs: 0 -> 1 (enter), j -> j (self-loop,
    self_loop_log_prob[j-1]) and j -> j+1 (forward_log_prob[j-1]), each scored by the
    senone of its destination; state n is final with forward_log_prob[n-1] (leaving the
    last state). A path of T frames therefore spends >= 1 frame in every HMM state.

    Args:
      senones: [n] senone id of each HMM state of the utterance (phone by phone).
      self_loop_log_prob, forward_log_prob: scalars or [n] per-state log-probabilities.
    """
    n = len(senones)
    if n == 0:
        raise ValueError("hmm_state_numerator: empty HMM state sequence.")
    loop = np.broadcast_to(np.asarray(self_loop_log_prob, np.float64), (n,))
    forward = np.broadcast_to(np.asarray(forward_log_prob, np.float64), (n,))
    arcs = [(0, 1, int(senones[0]), 0.0)]
    for j in range(1, n + 1):
        arcs.append((j, j, int(senones[j - 1]), float(loop[j - 1])))
        if j < n:
            arcs.append((j, j + 1, int(senones[j]), float(forward[j - 1])))
    return fsa_from_arcs(arcs, start=0, final={n: float(forward[n - 1])}, num_states=n + 1)


def alignment_numerator(
    senones: Sequence[int],
    phone_starts: Sequence[int],
    tolerance: int,
    self_loop_log_prob: float = float(np.log(0.5)),
    forward_log_prob: float = float(np.log(0.5)),
) -> tuple[Fsa, np.ndarray]:
    """Kaldi chain's constrained numerator from a frame-level alignment.

    The alignment gives the utterance's HMM state sequence (within each phone segment,
    each run of one senone is one HMM state: consecutive states of a phone never share a
    senone) and its phone segments [start_i, end_i). The numerator is the full
    left-to-right graph over that state sequence (`hmm_state_numerator`), restricted so
    that every state of phone i may only be occupied at frames in
    [start_i - tolerance, end_i + tolerance): the boundaries of the alignment may move by
    up to `tolerance` frames either way, as Kaldi's --left/right-tolerance do.

    Args:
      senones: [frames] senone id per frame.
      phone_starts: first frame of each phone segment, increasing, starting with 0.
      tolerance: frames a boundary may move.

    Returns:
      (fsa, allowed): the numerator graph with n + 1 states, and allowed [frames, n + 1]
      bool, True where a state may be occupied after consuming frame t (state 0, the
      non-emitting entry, never is).
    """
    senones = np.asarray(senones, np.int64)
    frames = len(senones)
    starts = [int(s) for s in phone_starts]
    if not starts or starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])) or starts[-1] >= frames:
        raise ValueError(
            f"alignment_numerator: phone_starts must increase from 0 within the {frames} frames, got {starts[:10]}..."
        )
    ends = starts[1:] + [frames]
    state_senones, state_phone = [], []
    for i, (a, b) in enumerate(zip(starts, ends)):
        run_starts = np.flatnonzero(np.diff(senones[a:b], prepend=-1) != 0)
        state_senones += senones[a:b][run_starts].tolist()
        state_phone += [i] * len(run_starts)
    fsa = hmm_state_numerator(state_senones, self_loop_log_prob, forward_log_prob)
    allowed = np.zeros((frames, len(state_senones) + 1), bool)
    for j, phone in enumerate(state_phone):
        lo = max(starts[phone] - tolerance, 0)
        hi = min(ends[phone] + tolerance, frames)
        allowed[lo:hi, j + 1] = True
    return fsa, allowed


def stack_numerators(
    numerators: Sequence[tuple[Fsa, np.ndarray | None]],
    frames: int,
    num_states: int | None = None,
    num_arcs: int | None = None,
) -> tuple[Fsa, np.ndarray]:
    """Batches (fsa, allowed) numerators: a stacked `Fsa` and allowed [batch, frames,
    states] (None means every state at every frame; frames beyond an utterance's own
    allowed rows are left allowed, they are padding and never scored)."""
    fsa = stack_fsas([f for f, _ in numerators], num_states, num_arcs)
    allowed = np.ones((len(numerators), frames, fsa.num_states), bool)
    for b, (_, mask) in enumerate(numerators):
        if mask is not None:
            t = min(frames, mask.shape[0])
            allowed[b, :t, :] = False
            allowed[b, :t, : mask.shape[1]] = mask[:t]
    return fsa, allowed
