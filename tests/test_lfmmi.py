"""LF-MMI forward-backward against a plain float64 numpy reference, finite differences,
leaky HMM, long utterances and impossible numerators."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tsasr.kaldi import kaldifst
from tsasr.losses import fsa as fsa_lib
from tsasr.losses import lfmmi


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def reference_forward_backward(log_likes, paddings, arcs, start, final, allowed=None, leak_probs=None, eta=0.0):
    """Plain loops in float64 probability space (small random graphs only).

    arcs: list of (src, dst, senone, log_weight); start, final: [states] log-weights.
    Returns log Z [batch] and occupancies [batch, frames, senones].
    """
    batch, frames, num_senones = log_likes.shape
    n = len(start)
    log_z = np.zeros(batch)
    occupancies = np.zeros(log_likes.shape)
    for b in range(batch):
        real = [t for t in range(frames) if paddings[b, t] == 0]
        alphas = [np.exp(start)]
        for t in real:
            new = np.zeros(n)
            for s, d, k, w in arcs:
                new[d] += alphas[-1][s] * np.exp(w + log_likes[b, t, k])
            if allowed is not None:
                new *= allowed[b, t]
            if eta > 0:
                new = new + eta * new.sum() * leak_probs
            alphas.append(new)
        z = float(np.sum(alphas[-1] * np.exp(final)))
        log_z[b] = np.log(z) if z > 0 else -np.inf
        beta = np.exp(final)
        for i in range(len(real) - 1, -1, -1):
            t = real[i]
            beta_in = beta + eta * np.dot(leak_probs, beta) if eta > 0 else beta.copy()
            if allowed is not None:
                beta_in = beta_in * allowed[b, t]
            new_beta = np.zeros(n)
            for s, d, k, w in arcs:
                p = np.exp(w + log_likes[b, t, k])
                if z > 0:
                    occupancies[b, t, k] += alphas[i][s] * p * beta_in[d] / z
                new_beta[s] += p * beta_in[d]
            beta = new_beta
    return log_z, occupancies


def random_graph(rng, num_states, num_senones, arcs_per_state):
    arcs = []
    for s in range(num_states):
        for _ in range(arcs_per_state):
            arcs.append(
                (
                    s,
                    int(rng.integers(num_states)),
                    int(rng.integers(num_senones)),
                    float(np.log(rng.uniform(0.05, 1.0))),
                )
            )
    final = {int(s): float(np.log(rng.uniform(0.2, 1.0))) for s in rng.choice(num_states, 2, replace=False)}
    start = {0: 0.0, int(rng.integers(1, num_states)): float(np.log(0.3))}
    return arcs, fsa_lib.fsa_from_arcs(arcs, start, final, num_states=num_states)


def relative_error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


def occupancy_error(a, b):
    """Max error relative to the largest occupancy (posteriors near 0 carry no scale)."""
    return float(np.max(np.abs(np.asarray(a) - b)) / max(np.max(np.abs(b)), 1e-12))


@pytest.mark.parametrize("eta", [0.0, 0.25])
def test_shared_graph_matches_numpy(x64, eta):
    rng = np.random.default_rng(1)
    arcs, graph = random_graph(rng, num_states=6, num_senones=5, arcs_per_state=3)
    log_likes = rng.normal(size=(3, 9, 5))
    paddings = np.zeros((3, 9))
    paddings[1, 6:] = 1.0
    paddings[2, 3] = 1.0  # a pad in the middle is skipped, not scored
    leak = fsa_lib.initial_log_probs(graph)
    ref_z, ref_occ = reference_forward_backward(
        log_likes, paddings, arcs, graph.start, graph.final, leak_probs=np.exp(leak), eta=eta
    )
    for fn in (lfmmi.forward_backward, lfmmi.den_forward_backward):
        kwargs = dict(leak_log_probs=leak, leaky_hmm_coefficient=eta)
        log_z, occ = jax.jit(lambda x, p: fn(x, p, graph, **kwargs))(log_likes, paddings)
        assert log_z.dtype == jnp.float64
        assert relative_error(log_z, ref_z) < 1e-6, fn.__name__
        assert occupancy_error(occ, ref_occ) < 1e-6, fn.__name__
        np.testing.assert_allclose(np.asarray(occ).sum(-1), 1.0 - paddings, atol=1e-9)


def test_batched_graphs_with_masks_match_numpy(x64):
    rng = np.random.default_rng(2)
    graphs, refs = [], []
    for b, n in enumerate((4, 7, 5)):
        arcs, graph = random_graph(rng, num_states=n, num_senones=6, arcs_per_state=2 + b)
        graphs.append(graph)
        refs.append(arcs)
    frames = 8
    log_likes = rng.normal(size=(3, frames, 6)) * 2.0
    paddings = np.zeros((3, frames))
    paddings[0, 5:] = 1.0
    allowed_each = [rng.random((frames, g.num_states)) < 0.8 for g in graphs]
    batched, allowed = fsa_lib.stack_numerators(list(zip(graphs, allowed_each)), frames)
    log_z, occ = jax.jit(lambda x, p: lfmmi.forward_backward(x, p, batched, allowed))(log_likes, paddings)
    for b, (arcs, graph) in enumerate(zip(refs, graphs)):
        ref_z, ref_occ = reference_forward_backward(
            log_likes[b : b + 1], paddings[b : b + 1], arcs, graph.start, graph.final, allowed=allowed_each[b][None]
        )
        assert np.isfinite(ref_z[0])
        assert relative_error(log_z[b : b + 1], ref_z) < 1e-6
        assert occupancy_error(occ[b : b + 1], ref_occ) < 1e-6


def test_gradient_matches_finite_differences(x64):
    rng = np.random.default_rng(3)
    _, den = random_graph(rng, num_states=5, num_senones=4, arcs_per_state=3)
    leak = fsa_lib.initial_log_probs(den)
    num = fsa_lib.stack_fsas(
        [
            fsa_lib.hmm_state_numerator([1, 3, 0], np.log(0.6), np.log(0.4)),
            fsa_lib.hmm_state_numerator([2, 2], np.log(0.5), np.log(0.5)),
        ]
    )
    log_likes = rng.normal(size=(2, 6, 4))
    paddings = np.zeros((2, 6))
    paddings[1, 5] = 1.0

    @jax.jit
    def objective(x):
        return jnp.sum(lfmmi.log_partition(x, paddings, num) - lfmmi.den_log_partition(x, paddings, den, leak, 0.1))

    grad = np.asarray(jax.grad(objective)(jnp.asarray(log_likes)))
    eps = 1e-5
    numeric = np.zeros_like(log_likes)
    for index in np.ndindex(*log_likes.shape):
        plus, minus = log_likes.copy(), log_likes.copy()
        plus[index] += eps
        minus[index] -= eps
        numeric[index] = (objective(plus) - objective(minus)) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, atol=1e-8, rtol=1e-6)
    assert np.all(grad[1, 5] == 0.0)  # a padded frame has no gradient
    # The log-space path gives the same denominator gradient as the scaled one.
    log_space = jax.grad(lambda x: jnp.sum(lfmmi.log_partition(x, paddings, den, None, leak, 0.1)))
    scaled = jax.grad(lambda x: jnp.sum(lfmmi.den_log_partition(x, paddings, den, leak, 0.1)))
    np.testing.assert_allclose(log_space(log_likes), scaled(log_likes), atol=1e-10)


def test_leaky_hmm_adds_mass_and_reaches_blocked_senones(x64):
    # A 2-state cycle 0 -(senone 0)-> 1 -(senone 1)-> 0: senone 0 can never follow itself.
    den = fsa_lib.fsa_from_arcs([(0, 1, 0, 0.0), (1, 0, 1, 0.0)], {0: 0.0}, {0: 0.0, 1: 0.0})
    leak = fsa_lib.initial_log_probs(den)
    np.testing.assert_allclose(np.exp(leak), [0.5, 0.5])
    rng = np.random.default_rng(4)
    log_likes = rng.normal(size=(1, 6, 2))
    paddings = np.zeros((1, 6))
    z = [float(lfmmi.den_forward_backward(log_likes, paddings, den, leak, eta)[0][0]) for eta in (0.0, 0.05, 0.2)]
    assert z[0] < z[1] < z[2]  # leak only ever adds paths
    blocked = np.full((1, 4, 2), -30.0)
    blocked[..., 0] = 0.0  # only senone 0 is likely: needs 0 -> 0, which the cycle forbids
    strict = float(lfmmi.den_forward_backward(blocked, paddings[:, :4], den, leak, 0.0)[0][0])
    leaky = float(lfmmi.den_forward_backward(blocked, paddings[:, :4], den, leak, 0.1)[0][0])
    assert strict < -50.0 and leaky > -15.0


def _long_alignment(rng, frames, num_senones):
    phone_starts, senones, t = [], [], 0
    while t < frames:
        phone_starts.append(t)
        for _ in range(3):
            run = int(rng.integers(1, 6))
            senones += [int(rng.integers(num_senones))] * run
        t = len(senones)
    senones = senones[:frames]
    # A cut may leave a trailing phone with its runs merged; keep starts inside the frames.
    return np.asarray(senones), [s for s in phone_starts if s < frames]


def test_long_utterance_float32_is_finite():
    rng = np.random.default_rng(5)
    frames, num_senones = 1500, 40
    senones, starts = _long_alignment(rng, frames, num_senones)
    num, allowed = fsa_lib.alignment_numerator(senones, starts, tolerance=2)
    num_b, allowed_b = fsa_lib.stack_numerators([(num, allowed)], frames)
    arcs, den = random_graph(rng, num_states=30, num_senones=num_senones, arcs_per_state=6)
    leak = fsa_lib.initial_log_probs(den)
    # Confident, partly wrong outputs: a wide dynamic range is what breaks naive recursions.
    outputs = jnp.asarray(rng.normal(size=(1, frames, num_senones)) * 8.0, jnp.float32)
    paddings = jnp.zeros((1, frames), jnp.float32)
    loss_fn = jax.jit(
        lambda y: lfmmi.lfmmi_loss(
            y,
            paddings,
            num_b,
            den,
            numerator_allowed=allowed_b,
            den_leak_log_probs=leak,
            leaky_hmm_coefficient=0.1,
            l2_regularize=5e-4,
        )[0]
    )
    loss, grad = jax.value_and_grad(loss_fn)(outputs)
    _, m = lfmmi.lfmmi_loss(outputs, paddings, num_b, den, numerator_allowed=allowed_b, den_leak_log_probs=leak)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    assert float(m["valid"][0]) == 1.0 and np.isfinite(m["den_log_z"][0])
    assert abs(float(m["num_log_z"][0])) > 1e3  # a real 1,500-frame score, not clipped
    # Per frame, gamma_num and gamma_den each sum to 1, so the MMI gradient sums to 0.
    mmi_grad = np.asarray(grad) - 5e-4 * np.asarray(outputs) / frames
    np.testing.assert_allclose(mmi_grad.sum(-1) * frames, 0.0, atol=2e-3)
    _, den_occ = lfmmi.den_forward_backward(outputs, paddings, den, leak, 0.1)
    np.testing.assert_allclose(np.asarray(den_occ).sum(-1), 1.0, atol=1e-4)


def test_tolerance_zero_numerator_is_the_alignment(x64):
    rng = np.random.default_rng(6)
    senones = np.array([3, 3, 1, 1, 1, 4, 2, 2, 0, 0, 5, 5])
    starts = [0, 5, 8]
    num, allowed = fsa_lib.alignment_numerator(senones, starts, tolerance=0)
    log_likes = rng.normal(size=(1, 12, 6))
    batched, allowed_b = fsa_lib.stack_numerators([(num, allowed)], 12)
    log_z, occ = lfmmi.forward_backward(log_likes, np.zeros((1, 12)), batched, allowed_b)
    occ = np.asarray(occ[0])
    # Tolerance 0 pins the phone boundaries; inside a phone the HMM state boundaries stay
    # free, but each phone's first and last frames are pinned to its first and last state.
    for phone_senones, frames in (([3, 1], range(0, 5)), ([4, 2], range(5, 8)), ([0, 5], range(8, 12))):
        np.testing.assert_allclose(occ[list(frames)][:, phone_senones].sum(1), 1.0, atol=1e-9)
        assert abs(occ[frames[0], phone_senones[0]] - 1.0) < 1e-9
        assert abs(occ[frames[-1], phone_senones[-1]] - 1.0) < 1e-9
    assert 0.01 < occ[2, 3] < 0.99  # a free state boundary inside the first phone
    # Tolerance 2 allows strictly more paths, so more mass.
    wide, allowed_wide = fsa_lib.alignment_numerator(senones, starts, tolerance=2)
    batched_w, allowed_w = fsa_lib.stack_numerators([(wide, allowed_wide)], 12)
    log_z_wide, _ = lfmmi.forward_backward(log_likes, np.zeros((1, 12)), batched_w, allowed_w)
    assert float(log_z_wide[0]) > float(log_z[0])


def test_impossible_numerator_is_masked_not_nan():
    rng = np.random.default_rng(7)
    frames, num_senones = 10, 5
    ok, ok_allowed = fsa_lib.alignment_numerator([0, 0, 1, 1, 2, 2, 3, 3, 4, 4], [0, 4], 1)
    # Seven HMM states cannot fit in the 5 real frames of the second utterance.
    too_long = fsa_lib.hmm_state_numerator([0, 1, 2, 3, 4, 0, 1], np.log(0.5), np.log(0.5))
    # A tolerance window that excludes the only state at frame 3: no path at all.
    blocked, blocked_allowed = fsa_lib.alignment_numerator([1] * 10, [0], 0)
    blocked_allowed[3, :] = False
    num, allowed = fsa_lib.stack_numerators([(ok, ok_allowed), (too_long, None), (blocked, blocked_allowed)], frames)
    _, den = random_graph(rng, num_states=4, num_senones=num_senones, arcs_per_state=4)
    leak = fsa_lib.initial_log_probs(den)
    outputs = jnp.asarray(rng.normal(size=(3, frames, num_senones)), jnp.float32)
    paddings = jnp.zeros((3, frames)).at[1, 5:].set(1.0)

    @jax.jit
    def loss_fn(y):
        return lfmmi.lfmmi_loss(
            y,
            paddings,
            num,
            den,
            numerator_allowed=allowed,
            den_leak_log_probs=leak,
            xent_logits=y,
            xent_regularize=0.1,
        )

    (loss, m), grad = jax.value_and_grad(loss_fn, has_aux=True)(outputs)
    np.testing.assert_array_equal(m["valid"], [1.0, 0.0, 0.0])
    assert float(m["skipped"]) == 2.0 and float(m["frames"]) == 10.0
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    assert np.all(np.asarray(grad)[1:] == 0.0)
    only_first, _ = loss_fn(outputs.at[1:].set(0.0))
    np.testing.assert_allclose(loss, only_first, rtol=1e-6)


def test_kaldifst_round_trip_and_padding():
    fst = kaldifst.compile(s="0 1 3 3 0.5\n1 1 2 2 0.1\n1 2 1 1 1.0\n2 0.25\n", acceptor=False)
    graph = fsa_lib.fsa_from_kaldifst(fst)
    assert graph.num_states == 3 and graph.num_arcs == 3
    by_label = {
        int(l): (int(s), int(d), float(w)) for s, d, l, w in zip(graph.src, graph.dst, graph.label, graph.log_weight)
    }
    assert by_label == {2: (0, 1, -0.5), 1: (1, 1, -0.1), 0: (1, 2, -1.0)}
    np.testing.assert_allclose(graph.final, [-np.inf, -np.inf, -0.25])
    stacked = fsa_lib.stack_fsas([graph, fsa_lib.hmm_state_numerator([0], 0.0, 0.0)])
    assert stacked.src.shape == (2, 3) and stacked.start.shape == (2, 3)
    assert np.isneginf(stacked.log_weight[1, 2]) and np.isneginf(stacked.start[1, 2])
    with pytest.raises(ValueError, match="epsilon"):
        fsa_lib.fsa_from_kaldifst(kaldifst.compile(s="0 1 0 0\n1\n", acceptor=False))
