"""Log-mel filterbank energies (LFBE) computed in JAX, on device, inside jit.

Matches Kaldi's `compute-fbank` (and kaldi-native-fbank) with snip_edges=true, povey
window, pre-emphasis 0.97, DC removal, power spectrum and a natural log floored at
FLT_EPSILON; dither is not applied here (features must be a pure function of the audio,
so parallel clean/noisy copies stay frame-aligned and tests are exact).

Audio is float32 in [-1, 1] (the DESIGN.md contract), not Kaldi's int16 scale, so the
features differ from int16-scale Kaldi features by the constant 2*log(32768); global
mean/variance normalisation removes that offset anyway.

This module must not read files or know about manifests: it maps arrays to arrays.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

FLT_EPSILON = float(np.finfo(np.float32).eps)


@dataclasses.dataclass(frozen=True)
class LfbeConfig:
    """Options of the filterbank, named after Kaldi's."""

    sample_rate: int = 16000
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    num_bins: int = 64
    low_freq: float = 20.0
    high_freq: float = 0.0  # <= 0 means offset from Nyquist, as in Kaldi.
    preemph_coeff: float = 0.97
    remove_dc_offset: bool = True

    @property
    def window_size(self) -> int:
        return int(self.sample_rate * self.frame_length_ms / 1000)

    @property
    def window_shift(self) -> int:
        return int(self.sample_rate * self.frame_shift_ms / 1000)

    @property
    def fft_size(self) -> int:
        return 1 << (self.window_size - 1).bit_length()


def num_frames(num_samples, config: LfbeConfig = LfbeConfig()):
    """Kaldi's frame count with snip_edges=true; works on ints and int arrays."""
    count = 1 + (num_samples - config.window_size) // config.window_shift
    if isinstance(count, (int, np.integer)):
        return max(int(count), 0)
    return jnp.maximum(count, 0)


def povey_window(size: int) -> np.ndarray:
    """Kaldi's povey window: a Hann window raised to 0.85, [size]."""
    n = np.arange(size, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2 * np.pi * n / (size - 1))) ** 0.85


def _mel(freq):
    return 1127.0 * np.log(1.0 + freq / 700.0)


def mel_banks(config: LfbeConfig = LfbeConfig()) -> np.ndarray:
    """Kaldi's triangular mel filters on the power spectrum, [fft_size // 2 + 1, num_bins].

    The Nyquist bin gets weight 0, as in Kaldi, which uses only fft_size // 2 bins.
    """
    nyquist = 0.5 * config.sample_rate
    high_freq = config.high_freq if config.high_freq > 0 else nyquist + config.high_freq
    num_fft_bins = config.fft_size // 2
    mel_low, mel_high = _mel(config.low_freq), _mel(high_freq)
    mel_delta = (mel_high - mel_low) / (config.num_bins + 1)
    mel = _mel(np.arange(num_fft_bins) * config.sample_rate / config.fft_size)
    left = mel_low + np.arange(config.num_bins)[:, None] * mel_delta
    center, right = left + mel_delta, left + 2 * mel_delta
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    weights = np.where((mel > left) & (mel < right), np.where(mel <= center, up, down), 0.0)
    weights = np.concatenate([weights, np.zeros((config.num_bins, 1))], axis=1)
    return weights.T.astype(np.float32)


def frame_signal(audio: jax.Array, config: LfbeConfig = LfbeConfig()) -> jax.Array:
    """Cuts [batch, samples] into overlapping frames [batch, frames, window_size].

    No gather: the signal is reshaped into chunks of gcd(window, shift) samples and each
    frame is the concatenation of window/gcd strided slices of chunks. This lowers to
    slices and a concat, which vectorise well on every backend.
    """
    window, shift = config.window_size, config.window_shift
    frames = num_frames(audio.shape[1], config)
    if frames == 0:
        return jnp.zeros((audio.shape[0], 0, window), audio.dtype)
    chunk = math.gcd(window, shift)
    chunks_per_shift, chunks_per_window = shift // chunk, window // chunk
    used = ((frames - 1) * chunks_per_shift + chunks_per_window) * chunk
    chunks = audio[:, :used].reshape(audio.shape[0], used // chunk, chunk)
    stop = (frames - 1) * chunks_per_shift + 1
    pieces = [chunks[:, j : j + stop : chunks_per_shift] for j in range(chunks_per_window)]
    return jnp.concatenate(pieces, axis=-1)


def lfbe(audio: jax.Array, paddings: jax.Array, config: LfbeConfig = LfbeConfig()):
    """Log-mel filterbank energies of a batch of padded utterances.

    Args:
      audio: [batch, samples] float waveform in [-1, 1].
      paddings: [batch, samples], 1.0 where the sample is padding. Padding must be at the
        end of each row (the utterance is the prefix of 1 - paddings).
      config: filterbank options.

    Returns:
      features: [batch, frames, num_bins] float32; zero on padded frames.
      feature_paddings: [batch, frames], 1.0 on frames that are not entirely real audio.
    """
    audio = audio.astype(jnp.float32)
    frames = frame_signal(audio, config)
    if config.remove_dc_offset:
        frames = frames - jnp.mean(frames, axis=-1, keepdims=True)
    # Kaldi pre-emphasises within each frame, using the frame's first sample as its own
    # predecessor.
    previous = jnp.concatenate([frames[..., :1], frames[..., :-1]], axis=-1)
    frames = frames - config.preemph_coeff * previous
    frames = frames * jnp.asarray(povey_window(config.window_size), jnp.float32)
    spectrum = jnp.fft.rfft(frames, n=config.fft_size, axis=-1)
    power = jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2
    energies = jnp.einsum("btf,fm->btm", power, jnp.asarray(mel_banks(config)), precision=jax.lax.Precision.HIGHEST)
    features = jnp.log(jnp.maximum(energies, FLT_EPSILON))

    lengths = jnp.sum(1.0 - paddings, axis=1).astype(jnp.int32)
    valid = jnp.arange(features.shape[1])[None, :] < num_frames(lengths, config)[:, None]
    feature_paddings = 1.0 - valid.astype(jnp.float32)
    features = jnp.where(valid[..., None], features, 0.0)
    return features, feature_paddings


class MeanVarStats:
    """Accumulates global per-dimension feature statistics over a dataset in float64.

    float64 sums because a few thousand hours is ~1e9 frames: float32 sums of squares
    would lose the variance to cancellation.
    """

    def __init__(self, dim: int = 64):
        self.count = 0
        self.sum = np.zeros(dim, np.float64)
        self.sum_squares = np.zeros(dim, np.float64)

    def add(self, features, paddings=None):
        """Adds frames of [..., frames, dim] features; frames with paddings 1.0 are skipped."""
        features = np.asarray(features, np.float64).reshape(-1, self.sum.shape[0])
        if paddings is not None:
            features = features[np.asarray(paddings).reshape(-1) < 0.5]
        if not np.all(np.isfinite(features)):
            raise ValueError("MeanVarStats.add: features contain NaN or Inf.")
        self.count += features.shape[0]
        self.sum += features.sum(axis=0)
        self.sum_squares += np.square(features).sum(axis=0)
        return self

    def finalize(self, variance_floor: float = 1e-8):
        """Returns (mean, std), each [dim] float32."""
        if self.count == 0:
            raise ValueError("MeanVarStats.finalize: no frames were accumulated.")
        mean = self.sum / self.count
        variance = np.maximum(self.sum_squares / self.count - mean**2, variance_floor)
        return mean.astype(np.float32), np.sqrt(variance).astype(np.float32)


def normalize(features, feature_paddings, mean, std):
    """(features - mean) / std on real frames; padded frames stay 0.

    Args:
      features: [batch, frames, dim].
      feature_paddings: [batch, frames], 1.0 = pad.
      mean, std: [dim] from MeanVarStats.finalize.
    """
    normalized = (features - mean) / std
    return jnp.where(feature_paddings[..., None] > 0.5, 0.0, normalized)
