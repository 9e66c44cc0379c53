"""The LF-MMI denominator graph: a pruned phone n-gram LM expanded into an FSA over senones.

Kaldi chain's recipe (Povey et al. 2016, chain-est-phone-lm + chain-den-graph), in numpy:
  1. `estimate_phone_lm`: an n-gram LM over phones from the phone sequences of the
     training alignments. Every history of fewer than `no_prune_order` - 1 phones is a
     state; of the longer histories only the `num_extra_histories` most frequent ones
     are. A state's next-phone distribution is the maximum-likelihood estimate
     c(h, p) / c(h) of its own history (no discounting, as Kaldi: the graph only has to
     cover the training phone sequences), and the transition on p goes to the longest
     kept suffix of h + p. The LM is therefore deterministic, epsilon-free and exactly
     stochastic (outgoing probabilities plus end-of-sentence sum to 1 in every state).
  2. `expand_phone_lm`: every phone becomes its HMM (states with self-loops and
     forward transitions) in triphone context. A phone's senones depend on its right
     neighbour, so a phone's HMM is emitted only once the next phone is chosen: the
     expansion walks (LM state, left phone, pending phone) and emits the pending phone's
     HMM on each LM transition. One HMM chain is built per (left, phone, right, next LM
     state); chains entered from different histories are shared.
No determinisation or minimisation follows (Kaldi does both): measured on a 4-gram
graph over 40 phones, kaldifst's determinize_star(use_log) + minimize_encoded grew it
from 13.8k to 15.4k states, and determinize_star's weight quantisation (delta 1/1024)
moved path sums by ~2e-3 nats. The result is an `Fsa` (tsasr.losses.fsa) whose labels are senone ids.

Senones come from `tsasr.hmm.context.ContextDependency` (the senone tree or the
monophone system) or from any callable senone_of(left, centre, right, state); phone id 0
stands for the utterance boundary in a window, as in the decoding graphs. This module
must not know about models, JAX or training.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Callable, Sequence

import numpy as np

from tsasr.losses.fsa import Fsa, fsa_from_arcs

BOS = -1  # history symbol before the first phone
EOS = -2  # the end-of-sentence "phone" of the LM
BOUNDARY = 0  # the phone id a context window uses beyond the utterance


def senone_states(tree) -> np.ndarray:
    """HMM state index of every senone of a tsasr.hmm.tree.SenoneTree, [senones]: each
    senone is a leaf of exactly one (centre phone, state) root."""
    states = np.zeros(tree.num_pdfs, np.int64)
    for (_, state), root in tree.roots.items():
        stack = [root]
        while stack:
            node = stack.pop()
            if "senone" in node:
                states[node["senone"]] = state
            else:
                stack += [node["yes"], node["no"]]
    return states


def phone_starts(phones: np.ndarray, states: np.ndarray | None = None) -> list[int]:
    """First frame of each phone of a per-frame phone alignment [frames].

    A phone said twice in a row ("this sound": S S) is one run of equal phone ids; given
    the per-frame HMM `states` [frames] its second instance starts where the state index
    falls back (left-to-right HMMs without skips only move forward within a phone).
    Without them the two would be merged into one phone with twice the HMM states, which
    neither the phone LM nor the expanded denominator can produce.
    """
    change = np.diff(phones) != 0
    if states is not None:
        change |= np.diff(states) < 0
    return [0] + (np.flatnonzero(change) + 1).tolist()


@dataclasses.dataclass
class PhoneLm:
    """A deterministic phone n-gram LM.

    histories: the kept history tuples; state i is histories[i] (state 0 is (BOS,)).
    arcs: per state, (phone, log_prob, next_state) for every phone seen after its history;
      phone EOS (next_state -1) ends the utterance.
    counts: per state, how many times its history was seen.
    """

    order: int
    histories: list[tuple[int, ...]]
    arcs: list[list[tuple[int, float, int]]]
    counts: list[int]

    @property
    def num_states(self) -> int:
        return len(self.histories)


def count_ngrams(phone_sequences: Sequence[Sequence[int]], order: int) -> dict[tuple[int, ...], collections.Counter]:
    """c(h, p) for every history h of 1 .. order-1 symbols (BOS included) seen before a
    phone or EOS p: {history: Counter(next symbol)}."""
    counts: dict[tuple[int, ...], collections.Counter] = collections.defaultdict(collections.Counter)
    for sequence in phone_sequences:
        symbols = [BOS] + [int(p) for p in sequence] + [EOS]
        if any(p <= BOUNDARY for p in symbols[1:-1]):
            raise ValueError("count_ngrams: phone ids must be >= 1 (0 is the boundary).")
        for i in range(1, len(symbols)):
            for k in range(1, order):
                if i - k < 0:
                    break
                counts[tuple(symbols[i - k : i])][symbols[i]] += 1
    return counts


def estimate_phone_lm(
    phone_sequences: Sequence[Sequence[int]], order: int = 4, num_extra_histories: int = 1000, no_prune_order: int = 3
) -> PhoneLm:
    """A pruned maximum-likelihood phone LM (Kaldi chain-est-phone-lm style).

    Args:
      phone_sequences: per utterance, its phone ids (>= 1) in order, e.g. from alignments.
      order: n-gram order (histories of up to order - 1 phones).
      num_extra_histories: histories longer than no_prune_order - 1 phones kept, the
        most frequent first (Kaldi's --num-extra-lm-states).
      no_prune_order: n-grams up to this order are never pruned.
    """
    if order < 2:
        raise ValueError("estimate_phone_lm: order must be >= 2.")
    counts = count_ngrams(phone_sequences, order)
    short = [h for h in counts if len(h) < no_prune_order]
    long_ = sorted((h for h in counts if len(h) >= no_prune_order), key=lambda h: (-sum(counts[h].values()), h))[
        :num_extra_histories
    ]
    # State 0 is the start history; the rest sorted for a reproducible numbering.
    kept = [(BOS,)] + sorted(h for h in short + long_ if h != (BOS,))
    index = {h: i for i, h in enumerate(kept)}
    arcs, state_counts = [], []
    for h in kept:
        total = sum(counts[h].values())
        state_counts.append(total)
        out = []
        for phone, c in sorted(counts[h].items()):
            if phone == EOS:
                out.append((EOS, math.log(c / total), -1))
                continue
            extended = (h + (phone,))[-(order - 1) :]
            while extended not in index:  # longest kept suffix; (phone,) itself is always kept
                extended = extended[1:]
            out.append((phone, math.log(c / total), index[extended]))
        arcs.append(out)
    return PhoneLm(order=order, histories=kept, arcs=arcs, counts=state_counts)


def sequence_log_prob(lm: PhoneLm, phones: Sequence[int]) -> float:
    """log P(phones, end of sentence) under `lm`: the phone-LM weight every path of this
    phone sequence carries in the expanded denominator graph. -inf if the LM never saw it."""
    state, total = 0, 0.0
    for phone in [int(p) for p in phones] + [EOS]:
        arc = next((a for a in lm.arcs[state] if a[0] == phone), None)
        if arc is None:
            return -math.inf
        total += arc[1]
        state = arc[2]
    return total


@dataclasses.dataclass(frozen=True)
class HmmTopology:
    """Per phone: number of HMM states and their self-loop / forward log-probabilities.

    num_states(phone) -> n; each state loops with self_loop_log_prob and moves on with
    forward_log_prob (they need not sum to 1 in log space terms: Kaldi chain treats
    transition scores as part of the graph, not trained).
    """

    num_states: Callable[[int], int]
    self_loop_log_prob: float = math.log(0.5)
    forward_log_prob: float = math.log(0.5)


def senone_fn_from_context(context) -> Callable[[int, int, int, int], int]:
    """senone_of(left, centre, right, state) from a ContextDependency (senone tree or
    monophone): the window is cut to the context's width around the centre."""
    width, centre = context.context_width, context.central_position
    if width == 1:
        return lambda left, phone, right, state: context.pdf((phone,), state)
    if width == 3 and centre == 1:
        return lambda left, phone, right, state: context.pdf((left, phone, right), state)
    raise ValueError(f"senone_fn_from_context: context width {width} is not supported.")


def expand_phone_lm(lm: PhoneLm, senone_of: Callable[[int, int, int, int], int], topology: HmmTopology) -> Fsa:
    """The denominator FSA over senone ids: `lm` with every phone replaced by its HMM.

    FSA states are HMM states of chains; chain (a, b, r, h') is phone b's HMM in window
    (a, b, r) followed by LM state h'. Its last state stands for "b done, r next": from
    there an arc enters chain (b, r, r', h'') with log-weight forward + log P(r' | h'),
    labelled with that chain's first senone. The first phone is entered from the start
    non-emitting state 0 with log P(p1 | BOS) + log P(p2 | h1); a chain with r = EOS ends in a final
    state with the last state's forward log-probability.

    Args:
      lm: the phone LM.
      senone_of: (left, centre, right, hmm state) -> senone id, with 0 at boundaries.
      topology: HMM topology.

    Returns:
      Fsa starting in state 0, with final weights on the chains' end states.
    """
    loop, forward = topology.self_loop_log_prob, topology.forward_log_prob
    chain_first: dict[tuple, int] = {}
    chain_last: dict[tuple, int] = {}
    arcs: list[tuple[int, int, int, float]] = []
    finals: dict[int, float] = {}
    pending: list[tuple] = []
    next_state = [1]  # state 0: the non-emitting entry, so the first frame is the first
    # phone's first HMM state (a start weight *on* that state would let
    # its forward arc skip it)

    def chain(a, b, r, h_next):
        """First and last FSA state of chain (a, b, r, h_next), building it once."""
        key = (a, b, r, h_next)
        if key in chain_first:
            return chain_first[key], chain_last[key]
        right = BOUNDARY if r == EOS else r
        senones = [senone_of(a, b, right, s) for s in range(topology.num_states(b))]
        first = next_state[0]
        next_state[0] += len(senones)
        for i, senone in enumerate(senones):
            arcs.append((first + i, first + i, senone, loop))
            if i + 1 < len(senones):
                arcs.append((first + i, first + i + 1, senones[i + 1], forward))
        last = first + len(senones) - 1
        chain_first[key], chain_last[key] = first, last
        if r == EOS:
            finals[last] = forward
        else:
            pending.append(key)
        return first, last

    def entry_senone(key):
        a, b, r, _ = key
        return senone_of(a, b, BOUNDARY if r == EOS else r, 0)

    entries: dict[int, tuple[int, float]] = {}
    for p1, lp1, h1 in lm.arcs[0]:
        if p1 == EOS:
            continue  # an empty utterance has no frames to score
        for p2, lp2, h2 in lm.arcs[h1]:
            key = (BOUNDARY, p1, p2, h2 if p2 != EOS else -1)
            first, _ = chain(*key)
            previous = entries.get(first, (entry_senone(key), -np.inf))[1]
            entries[first] = (entry_senone(key), float(np.logaddexp(previous, lp1 + lp2)))
    arcs += [(0, first, senone, w) for first, (senone, w) in entries.items()]
    while pending:
        key = pending.pop()
        _, b, r, h = key
        last = chain_last[key]
        for r2, lp, h2 in lm.arcs[h]:
            target = (b, r, r2, h2 if r2 != EOS else -1)
            first, _ = chain(*target)
            arcs.append((last, first, entry_senone(target), forward + lp))
    return fsa_from_arcs(arcs, 0, finals, num_states=next_state[0])


def denominator_graph(
    phone_sequences: Sequence[Sequence[int]],
    context=None,
    *,
    senone_of: Callable[[int, int, int, int], int] | None = None,
    topology: HmmTopology | None = None,
    order: int = 4,
    num_extra_histories: int = 1000,
    no_prune_order: int = 3,
) -> tuple[PhoneLm, Fsa]:
    """(phone LM from `phone_sequences`, the denominator FSA expanded from it); the LM also
    weighs the numerators (tsasr.train.sequence).

    Either `context` (a tsasr.hmm.context.ContextDependency: the senone tree, whose
    num_states(phone) also sets the topology's state counts) or `senone_of` with a
    `topology` must be given.
    """
    if context is not None:
        senone_of = senone_fn_from_context(context)
        topology = topology or HmmTopology(num_states=context.num_states)
    if senone_of is None or topology is None:
        raise ValueError("denominator_graph: pass a context dependency, or senone_of and topology.")
    lm = estimate_phone_lm(phone_sequences, order, num_extra_histories, no_prune_order)
    return lm, expand_phone_lm(lm, senone_of, topology)
