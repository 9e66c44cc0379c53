"""The official DCASE 2020 Task 2 baseline's features, in numpy (float64 inside, float32 out).

librosa.feature.melspectrogram(y, sr=16000, n_fft=1024, hop_length=512, n_mels=64, power=2.0)
as the baseline calls it: a centred STFT (the signal padded by n_fft // 2 on both sides; the
baseline's librosa 0.7 padded by reflection), a periodic Hann window, |X|^2, a Slaney-style
mel filterbank (Slaney's mel scale, area-normalised triangles), then
20 / power * log10(mel + eps) with eps = sys.float_info.epsilon. `stack_frames` makes the
baseline's 5-frame context vectors (frame t's vector is frames t..t+4, band-major per frame).

This is not tsasr.audio.lfbe (25 ms / 10 ms LFBE): the hop is 32 ms, the window 64 ms.
"""

from __future__ import annotations

import functools
import sys

import numpy as np

RATE = 16000
N_FFT = 1024
HOP = 512
N_MELS = 64
POWER = 2.0
CONTEXT = 5  # frames stacked into one baseline vector (5 x 64 = 320)


def hz_to_mel(hz):
    """Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, log above."""
    hz = np.asarray(hz, np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, hz / f_sp)


def mel_to_hz(mel):
    mel = np.asarray(mel, np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


@functools.cache
def mel_matrix(rate: int = RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] Slaney-normalised triangular filters from 0 Hz to rate / 2."""
    bins = np.linspace(0, rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(rate / 2), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights


def num_frames(samples: int) -> int:
    return 1 + samples // HOP


def log_mel(audio: np.ndarray) -> np.ndarray:
    """[frames, 64] float32 log-mel energies (dB-like) of mono 16 kHz audio, as the baseline's."""
    audio = np.asarray(audio, np.float64).reshape(-1)
    if audio.size <= N_FFT // 2:
        raise ValueError(f"log_mel: {audio.size} samples is too short for n_fft {N_FFT} (need > {N_FFT // 2})")
    padded = np.pad(audio, N_FFT // 2, mode="reflect")
    frames = num_frames(audio.size)
    index = np.arange(N_FFT)[None, :] + HOP * np.arange(frames)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann
    power = np.abs(np.fft.rfft(padded[index] * window, axis=-1)) ** POWER
    mel = power @ mel_matrix().T
    return (20.0 / POWER * np.log10(mel + sys.float_info.epsilon)).astype(np.float32)


def stack_frames(features, context: int = CONTEXT):
    """[..., frames, bands] -> [..., frames - context + 1, context * bands]: vector t holds frames
    t .. t + context - 1 (the baseline's vector_array[:, bands*i : bands*(i+1)] = frames[i : i + n]).
    Works on numpy and JAX arrays."""
    frames = features.shape[-2]
    n = frames - context + 1
    parts = [features[..., i : i + n, :] for i in range(context)]
    xp = np if isinstance(features, np.ndarray) else __import__("jax.numpy", fromlist=["concatenate"])
    return xp.concatenate(parts, axis=-1)


def stack_paddings(paddings, context: int = CONTEXT):
    """[..., frames] paddings (1 = pad) -> [..., frames - context + 1]: a vector is padding when
    any of its frames is."""
    n = paddings.shape[-1] - context + 1
    out = paddings[..., 0:n]
    for i in range(1, context):
        out = out + paddings[..., i : i + n]
    return (out > 0).astype(paddings.dtype)
