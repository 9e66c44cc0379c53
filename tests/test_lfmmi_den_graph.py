"""Denominator graph: phone LM estimation and pruning, HMM expansion, tree interface."""

import math

import jax
import numpy as np
import pytest

from tsasr.hmm import den_graph
from tsasr.hmm.tree import SenoneTree
from tsasr.losses import fsa as fsa_lib
from tsasr.losses import lfmmi


def random_sequences(rng, num, num_phones=6):
    return [rng.integers(1, num_phones + 1, size=int(rng.integers(2, 9))).tolist() for _ in range(num)]


def test_phone_lm_is_stochastic_and_maximum_likelihood():
    rng = np.random.default_rng(0)
    sequences = random_sequences(rng, 200)
    unpruned = den_graph.estimate_phone_lm(sequences, order=4, num_extra_histories=10**9)
    pruned = den_graph.estimate_phone_lm(sequences, order=4, num_extra_histories=20)
    counts = den_graph.count_ngrams(sequences, 4)
    assert len(unpruned.histories) == len(counts)  # every seen history is a state
    for lm in (unpruned, pruned):
        for h, out in zip(lm.histories, lm.arcs):
            np.testing.assert_allclose(sum(math.exp(lp) for _, lp, _ in out), 1.0, rtol=1e-12)
            for phone, lp, target in out:
                assert lp == pytest.approx(math.log(counts[h][phone] / sum(counts[h].values())))
                if phone != den_graph.EOS:  # next state: the longest kept suffix of h + phone
                    extended = (h + (phone,))[-3:]
                    kept = set(lm.histories)
                    longest = next(extended[i:] for i in range(len(extended)) if extended[i:] in kept)
                    assert lm.histories[target] == longest
    long_histories = [h for h in pruned.histories if len(h) == 3]
    assert len(long_histories) == 20
    frequency = {h: sum(c.values()) for h, c in counts.items() if len(h) == 3}
    threshold = min(frequency[h] for h in long_histories)
    assert all(f <= threshold for h, f in frequency.items() if h not in long_histories)
    assert pruned.histories[0] == (den_graph.BOS,)


def test_deterministic_lm_graph_equals_the_numerator():
    # One training sequence: every LM probability is 1, so the denominator is exactly the
    # full numerator of that phone sequence.
    phones = [2, 1, 3, 1]
    topology = den_graph.HmmTopology(
        num_states=lambda p: 2 if p == 3 else 3, self_loop_log_prob=math.log(0.7), forward_log_prob=math.log(0.3)
    )
    senone_of = lambda left, centre, right, state: 10 * centre + state + (left == 0)
    _, den = den_graph.denominator_graph([phones], senone_of=senone_of, topology=topology, order=3)
    states = []
    for i, p in enumerate(phones):
        left = phones[i - 1] if i else 0
        right = phones[i + 1] if i + 1 < len(phones) else 0
        states += [senone_of(left, p, right, s) for s in range(topology.num_states(p))]
    num = fsa_lib.hmm_state_numerator(states, math.log(0.7), math.log(0.3))
    rng = np.random.default_rng(1)
    log_likes = rng.normal(size=(2, 16, 40))
    paddings = np.zeros((2, 16))
    paddings[1, 13:] = 1.0
    with jax.enable_x64(True):
        den_z, den_occ = lfmmi.den_forward_backward(log_likes, paddings, den)
        num_z, num_occ = lfmmi.forward_backward(log_likes, paddings, num)
    np.testing.assert_allclose(den_z, num_z, rtol=1e-9)
    np.testing.assert_allclose(den_occ, num_occ, atol=1e-9)


def test_expanded_graph_is_stochastic():
    rng = np.random.default_rng(2)
    sequences = random_sequences(rng, 60, num_phones=4)
    topology = den_graph.HmmTopology(num_states=lambda p: 2)
    senone_of = lambda left, centre, right, state: (centre * 2 + state) * 3 + (left + right) % 3
    _, den = den_graph.denominator_graph(
        sequences, senone_of=senone_of, topology=topology, order=3, num_extra_histories=5
    )
    out = np.zeros(den.num_states)
    np.add.at(out, den.src, np.exp(den.log_weight))
    out += np.exp(den.final)
    # Every HMM state: loop + forward x (LM probabilities summing to 1) = 1.
    np.testing.assert_allclose(out, 1.0, rtol=1e-9)
    assert np.all(den.label >= 0) and den.start[0] == 0.0 and np.all(np.isneginf(den.start[1:]))


class _RecordingTree:
    """The ContextDependency interface of tsasr.hmm.tree.SenoneTree, recording windows."""

    context_width, central_position, num_pdfs = 3, 1, 64

    def __init__(self):
        self.windows = set()

    def num_states(self, phone):
        return 5 if phone == 1 else 3

    def pdf(self, window, state):
        self.windows.add(tuple(window))
        return (window[1] * 5 + state) % self.num_pdfs


def test_senone_tree_interface_gives_windows_and_topology():
    tree = _RecordingTree()
    _, den = den_graph.denominator_graph([[1, 2, 3, 1], [1, 3, 1]], tree, order=3)
    assert (0, 1, 2) in tree.windows and (3, 1, 0) in tree.windows  # boundaries are 0
    assert (2, 3, 1) in tree.windows and (1, 3, 1) in tree.windows
    assert all(len(w) == 3 and w[1] != 0 for w in tree.windows)
    # Phone 1 has 5 states and the shortest trigram path is 1 3 1: 5 + 3 + 5 frames.
    lengths = []
    for frames in (12, 13):
        log_z, _ = lfmmi.den_forward_backward(np.zeros((1, frames, 64)), np.zeros((1, frames)), den)
        lengths.append(np.isfinite(float(log_z[0])))
    assert lengths == [False, True]


def test_repeated_phone_is_two_phones_in_numerator_and_denominator():
    # "this sound": S S across a word boundary is one run of equal phone ids in the
    # alignment; the HMM states tell the two instances apart, and only then is the
    # alignment a path of the denominator graph.
    names = {1: "SIL", 2: "AA", 3: "S"}
    roots, senone = {}, 0
    for phone, name in names.items():
        for state in range(5 if name == "SIL" else 3):
            roots[(phone, state)] = {"senone": senone, "count": 1.0}
            senone += 1
    tree = SenoneTree(roots, names)
    states_of = den_graph.senone_states(tree)
    np.testing.assert_array_equal(states_of, [0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2])
    sequence, durations = [1, 2, 3, 3, 1], [[2, 1, 1, 1, 2], [2, 2, 1], [1, 2, 2], [2, 1, 1], [1, 1, 1, 1, 1]]
    phones = np.concatenate([[p] * sum(d) for p, d in zip(sequence, durations)])
    senones = np.concatenate(
        [[tree.pdf((0, p, 0), s)] * n for p, d in zip(sequence, durations) for s, n in enumerate(d)]
    )
    assert len(den_graph.phone_starts(phones)) == 4  # the two S merged
    starts = den_graph.phone_starts(phones, states_of[senones])
    assert starts == [0, 7, 12, 17, 21]
    np.testing.assert_array_equal(phones[starts], sequence)
    _, den = den_graph.denominator_graph([phones[starts].tolist()], tree, order=3)
    num, allowed = fsa_lib.alignment_numerator(senones, starts, tolerance=0)
    assert num.num_states == 1 + 5 + 3 + 3 + 3 + 5
    forced = np.full((1, len(senones), tree.num_pdfs), -1e3)
    forced[0, np.arange(len(senones)), senones] = 0.0
    with jax.enable_x64(True):
        den_z, _ = lfmmi.den_forward_backward(forced, np.zeros((1, len(senones))), den)
        num_z, _ = lfmmi.forward_backward(forced, np.zeros((1, len(senones))), num, allowed=allowed[None])
    assert float(den_z[0]) > -100 and float(num_z[0]) > -100


def test_numerator_with_its_lm_weight_is_part_of_the_denominator():
    # A numerator starting with log P_lm(its phones) weighs each of its paths exactly as the
    # denominator does, so log Z_num <= log Z_den (the MMI objective is a log posterior).
    rng = np.random.default_rng(3)
    sequences = random_sequences(rng, 30, num_phones=4)
    topology = den_graph.HmmTopology(num_states=lambda p: 2)
    senone_of = lambda left, centre, right, state: (centre * 2 + state) * 3 + (left + right) % 3
    lm = den_graph.estimate_phone_lm(sequences, order=3)
    den = den_graph.expand_phone_lm(lm, senone_of, topology)
    for phones in sequences[:5]:
        log_prob = den_graph.sequence_log_prob(lm, phones)
        assert -50 < log_prob < 0
        states = []
        for i, p in enumerate(phones):
            left = phones[i - 1] if i else 0
            right = phones[i + 1] if i + 1 < len(phones) else 0
            states += [senone_of(left, p, right, s) for s in range(2)]
        num = fsa_lib.hmm_state_numerator(states, math.log(0.5), math.log(0.5))
        num = fsa_lib.Fsa(num.src, num.dst, num.label, num.log_weight, num.start + log_prob, num.final)
        # Peaked scores on the numerator's own senones: its path dominates both sums.
        frames = len(states) + 3
        x = rng.normal(size=(1, frames, 40))
        x[0, np.arange(frames), states + [states[-1]] * 3] += 30.0
        with jax.enable_x64(True):
            num_z, _ = lfmmi.forward_backward(x, np.zeros((1, frames)), num)
            den_z, _ = lfmmi.den_forward_backward(x, np.zeros((1, frames)), den)
        assert float(num_z[0]) <= float(den_z[0]) + 1e-9
        assert float(den_z[0]) - float(num_z[0]) < 1e-3


def test_compiled_denominator_sums_left_contexts_and_matches_log_space():
    # The expanded graph is state-labelled (no state is split) and the last states of
    # chains that differ only in their left phone share their outgoing arcs, so the
    # compiled graph gathers fewer arcs than the graph has, yet computes the same sums as
    # the general log-space forward-backward, leak included.
    rng = np.random.default_rng(5)
    sequences = random_sequences(rng, 80, num_phones=5)
    topology = den_graph.HmmTopology(num_states=lambda p: 3)
    senone_of = lambda left, centre, right, state: (centre * 3 + state) * 4 + (2 * left + right) % 4
    _, den = den_graph.denominator_graph(sequences, senone_of=senone_of, topology=topology, order=3)
    with jax.enable_x64(True):
        compiled = lfmmi.DenominatorGraph.compile(den, np.float64)
    sparse_arcs = int(np.sum((den.dst != den.src) & (den.dst != den.src + 1)))
    assert compiled.num_states == den.num_states
    assert 0 < compiled.fwd_dst.shape[0] < sparse_arcs
    leak = fsa_lib.initial_log_probs(den)
    log_likes = rng.normal(size=(2, 30, 80))
    paddings = np.zeros((2, 30))
    paddings[1, 22:] = 1.0
    with jax.enable_x64(True):
        fast_z, fast_occ = lfmmi.den_forward_backward(log_likes, paddings, compiled, leak, 0.1)
        log_z, log_occ = lfmmi.forward_backward(
            log_likes, paddings, den, leak_log_probs=leak, leaky_hmm_coefficient=0.1
        )
    np.testing.assert_allclose(fast_z, log_z, rtol=1e-10)
    np.testing.assert_allclose(fast_occ, log_occ, atol=1e-10)
