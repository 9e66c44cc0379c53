"""MFCC features for the GMM-HMM: DCT of the project's LFBE, deltas, per-speaker CMVN.

Diagonal-covariance GMMs want decorrelated features, so the 64 log-mel energies the
neural models use are turned into 13 cepstra (DCT-II, Kaldi's cepstral lifter) with
first and second differences. Frames follow the LFBE contract exactly (25 ms / 10 ms,
snip_edges), so a GMM alignment frame t is the network's frame t.

Must not know about models or manifests beyond a list of (audio, speaker).
"""

from __future__ import annotations

import collections
import functools
from typing import Sequence

import jax
import numpy as np

from tsasr.audio import lfbe as lfbe_lib
from tsasr.data import padded

NUM_CEPS = 13
CEPSTRAL_LIFTER = 22.0
# Padding audio up to this many samples times a power of two bounds the number of distinct
# shapes the jitted LFBE compiles for.
_BUCKET_SAMPLES = 32000
_BATCH = 16


def dct_matrix(num_bins: int, num_ceps: int = NUM_CEPS) -> np.ndarray:
    """Orthonormal DCT-II with Kaldi's cepstral liftering folded in, [num_bins, num_ceps]."""
    n = np.arange(num_bins)
    k = np.arange(num_ceps)
    basis = np.cos(np.pi / num_bins * (n[:, None] + 0.5) * k[None, :]) * np.sqrt(2.0 / num_bins)
    basis[:, 0] = np.sqrt(1.0 / num_bins)
    lifter = 1.0 + 0.5 * CEPSTRAL_LIFTER * np.sin(np.pi * k / CEPSTRAL_LIFTER)
    return (basis * lifter[None, :]).astype(np.float32)


def add_deltas(feats: np.ndarray, window: int = 2) -> np.ndarray:
    """Kaldi's add-deltas (order 2, window 2): [frames, d] -> [frames, 3d]."""

    def delta(x):
        padded = np.pad(x, ((window, window), (0, 0)), mode="edge")
        num = sum(
            k * (padded[window + k : window + k + len(x)] - padded[window - k : window - k + len(x)])
            for k in range(1, window + 1)
        )
        return num / (2 * sum(k * k for k in range(1, window + 1)))

    first = delta(feats)
    return np.concatenate([feats, first, delta(first)], axis=1).astype(np.float32)


@functools.cache
def _jitted_lfbe():
    return jax.jit(lfbe_lib.lfbe)


def log_mel(audios: Sequence[np.ndarray]) -> list[np.ndarray]:
    """LFBE of each waveform, [frames, 64] float32, through the project's JAX LFBE."""
    order = np.argsort([len(a) for a in audios])  # (not stable: ties keep this order)
    items = {int(i): np.asarray(audios[i], np.float32) for i in order}
    result: list[np.ndarray | None] = [None] * len(audios)
    # Widths are powers of two times a bucket and the batch is always full, so a whole
    # corpus compiles the LFBE only a handful of times.
    width = padded.next_power_of_two_times(_BUCKET_SAMPLES)
    for batch, (feats, _) in padded.map_padded(_jitted_lfbe(), items, _BATCH, width):
        feats = np.asarray(feats)
        for row, (i, n) in enumerate(zip(batch.ids, batch.lengths)):
            result[i] = feats[row, : lfbe_lib.num_frames(n)]
    return result  # type: ignore[return-value]


def mfcc_with_deltas(audios: Sequence[np.ndarray], speakers: Sequence[str]) -> list[np.ndarray]:
    """39-dim MFCC + deltas, mean and variance normalised per speaker, one [frames, 39]
    array per waveform (frames may be 0 for audio shorter than one window)."""
    mels = log_mel(audios)
    dct = dct_matrix(mels[0].shape[1] if mels else 64)
    feats = [add_deltas(m @ dct) if len(m) else np.zeros((0, 3 * NUM_CEPS), np.float32) for m in mels]
    by_speaker = collections.defaultdict(list)
    for i, speaker in enumerate(speakers):
        by_speaker[speaker].append(i)
    for indices in by_speaker.values():
        stacked = np.concatenate([feats[i] for i in indices])
        if len(stacked) < 2:
            continue
        mean, std = stacked.mean(0), np.maximum(stacked.std(0), 1e-3)
        for i in indices:
            feats[i] = ((feats[i] - mean) / std).astype(np.float32)
    return feats
