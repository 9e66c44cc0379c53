"""The streaming stage-1 detector: a Viterbi over the wake word's left-to-right HMM states
against a background model, one score per frame, no look-ahead of its own.

The network gives per-frame log posteriors over targets: silence, the wake word's states
(target ids `keyword`, in order) and the background units (monophones, or one filler). The
background is a free loop of its units, so its best path takes the best background unit at
every frame: bg(t) = max_b log p(b | x_t). A wake-word state's gain at frame t is
g_j(t) = log p(kw_j | x_t) - bg(t), and

    D_0(t) = max(D_0(t-1), 0) + g_0(t)               (0: the path leaves the background at t)
    D_j(t) = max(D_j(t-1), D_{j-1}(t-1)) + g_j(t)     (stay, or advance one state)
    score(t) = D_{J-1}(t)

so score(t) is the log-likelihood ratio of the best path "background, then the whole wake word
ending at t" against "background throughout" over the same frames: the keyword/background
Viterbi of a DNN-HMM spotter. It needs frames <= t only; the detector's latency is the
network's right context (frames) plus one analysis window.

`offline_scores` is the reference: for every end frame t, the maximum over every start s and
every segmentation of s..t into the J states in order (each >= 1 frame) of the summed gains,
by brute force over the whole utterance; tests/test_wakeword.py checks the two agree.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np

NEG = -1e30


def gains(log_posteriors: np.ndarray, keyword: tuple[int, ...], background: tuple[int, ...]) -> np.ndarray:
    """[frames, targets] log posteriors -> [frames, J] gains of the wake word's states."""
    lp = np.asarray(log_posteriors, np.float32)
    return lp[:, list(keyword)] - lp[:, list(background)].max(-1, keepdims=True)


def _step(carry, g):
    entered = jnp.maximum(carry[:1], 0.0)
    advanced = carry[:-1]
    stay = carry[1:]
    from_previous = advanced > stay
    new = jnp.concatenate([entered, jnp.maximum(stay, advanced)]) + g
    # Backpointers: for state 0, True = the path entered at this frame; for j > 0, True = it
    # advanced from state j-1 at this frame.
    back = jnp.concatenate([carry[:1] <= 0.0, from_previous])
    return new, (new[-1], back)


@jax.jit
def stream(g: jax.Array, carry: jax.Array):
    """Processes a chunk of gains [frames, J] from state `carry` [J] (NEG at the start):
    returns (scores [frames], backpointers [frames, J] bool, the carry for the next chunk)."""
    carry, (scores, back) = jax.lax.scan(_step, carry, g)
    return scores, back, carry


def initial_carry(num_states: int) -> np.ndarray:
    return np.full((num_states,), NEG, np.float32)


@functools.cache
def _bucket(frames: int) -> int:
    return max(256, 1 << (int(frames) - 1).bit_length())


def streaming_scores(g: np.ndarray, chunk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Scores and backpointers of a whole utterance, fed to the streaming recursion in chunks of
    `chunk` frames (None: one chunk, padded to a power of two so few shapes compile)."""
    g = np.asarray(g, np.float32)
    frames, states = g.shape
    carry = initial_carry(states)
    scores, backs = [], []
    size = chunk or _bucket(max(frames, 1))
    for start in range(0, max(frames, 1), size):
        piece = g[start : start + size]
        n = piece.shape[0]
        if n < size:  # pad the last chunk; the padded frames come after every real one
            piece = np.concatenate([piece, np.zeros((size - n, states), np.float32)])
        s, b, new_carry = stream(piece, carry)
        if n < size:
            carry = None  # the carry after padding is meaningless; nothing follows
        else:
            carry = new_carry
        scores.append(np.asarray(s)[:n])
        backs.append(np.asarray(b)[:n])
    return np.concatenate(scores)[:frames], np.concatenate(backs)[:frames]


def offline_scores(g: np.ndarray) -> np.ndarray:
    """Reference: max over start s and segmentations of s..t of the summed gains, for each t,
    by enumerating every segmentation (small inputs only)."""
    g = np.asarray(g, np.float64)
    frames, states = g.shape
    cumulative = np.concatenate([np.zeros((1, states)), np.cumsum(g, 0)])
    out = np.full(frames, -np.inf)
    for t in range(frames):
        for s in range(t - states + 2):
            length = t - s + 1
            # boundaries: the first frame of states 1..J-1, strictly increasing in (s, t]
            for cuts in itertools.combinations(range(s + 1, t + 1), states - 1):
                starts = (s,) + cuts
                ends = cuts + (t + 1,)
                total = sum(cumulative[e, j] - cumulative[b, j] for j, (b, e) in enumerate(zip(starts, ends)))
                out[t] = max(out[t], total)
            del length
    return out


def backtrack(back: np.ndarray, end: int) -> list[tuple[int, int]]:
    """The frames [start, stop) of each wake-word state on the best path ending at frame `end`."""
    states = back.shape[1]
    j, t = states - 1, end
    stops = [end + 1] * states
    starts = [0] * states
    while t >= 0:
        if j > 0 and back[t, j]:
            starts[j] = t
            stops[j - 1] = t
            j -= 1
        elif j == 0 and back[t, 0]:
            starts[0] = t
            break
        t -= 1
    return list(zip(starts, stops))
