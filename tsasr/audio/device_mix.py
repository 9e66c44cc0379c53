"""Reverberant noisy mixes made on the device inside the jitted step (on-the-fly noisify).

The host draws what is random about a mix (which noise segments, a room and its impulse
responses, an SNR: data_prep.noisify.draw_recipe) and hands the step padded arrays; this
module does the arithmetic of data_prep.noisify.render on them: every source convolved with
its RIR by one real FFT of a static length, the reverberant copy advanced by the talker RIR's
peak (so frame t of the mix is frame t of the clean audio), the sum of reverberant noises
scaled to the SNR against the reverberant speech over the utterance's real samples, mixed,
and scaled down as render does when the mix would clip 16-bit PCM. tests/test_onthefly_noisify.py
compares it with render (float64) and measures the residual lag.

Not here: drawing recipes, reading noise or computing RIRs (the host's, per batch), band
limiting and loudspeaker playback (the test conditions' only; those stay offline copies).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from scipy import fft as scipy_fft

from tsasr.audio import device_features

CLIP_PEAK = 0.95  # render's 16-bit headroom: a mix peaking above is scaled to peak here
BATCH_KEYS = ("audio", "audio_lengths", "noises", "rirs", "delays", "snr_db")


def fft_length(samples: int, taps: int) -> int:
    """The static FFT length for linear convolution of `samples` with `taps` (no wrap-around)."""
    return scipy_fft.next_fast_len(samples + taps - 1, real=True)


def reverberant_mix(audio, audio_lengths, noises, rirs, delays, snr_db):
    """The noisy mixes of a batch, as data_prep.noisify.render makes them (without band limits).

    Args:
      audio: [batch, samples] int16 or float clean speech; each row's prefix of audio_lengths.
      audio_lengths: [batch] int real samples per row.
      noises: [batch, noises, samples] float32 noise segments (zero beyond the row's length;
        a row's unused noise slots are zero too).
      rirs: [batch, 1 + noises, taps] float32 impulse responses, the talker's first, each
        noise's scaled by that noise's source gain (render's `gains`); zero rows for unused slots.
      delays: [batch] int samples to advance by (the talker RIR's peak, < taps).
      snr_db: [batch] float speech-to-noise ratio of the reverberant mix.

    Returns:
      [batch, samples] float32 mixes, 0 beyond each row's length.
    """
    if jnp.issubdtype(audio.dtype, jnp.integer):
        audio = audio.astype(jnp.float32) / device_features.PCM_SCALE
    samples = audio.shape[1]
    nfft = fft_length(samples, rirs.shape[-1])
    sources = jnp.concatenate([audio[:, None, :].astype(jnp.float32), noises.astype(jnp.float32)], axis=1)
    spectra = jnp.fft.rfft(sources, n=nfft, axis=-1) * jnp.fft.rfft(rirs.astype(jnp.float32), n=nfft, axis=-1)
    # Speech, and the sum of the reverberant noises (the convolution is linear: one inverse FFT).
    spectra = jnp.stack([spectra[:, 0], jnp.sum(spectra[:, 1:], axis=1)], axis=1)
    wet = jnp.fft.irfft(spectra, n=nfft, axis=-1)  # [batch, 2, nfft]
    wet = jax.vmap(lambda w, d: jax.lax.dynamic_slice_in_dim(w, d, samples, axis=-1))(wet, delays.astype(jnp.int32))
    real = (jnp.arange(samples)[None, :] < audio_lengths[:, None]).astype(jnp.float32)
    wet = wet * real[:, None, :]
    count = jnp.maximum(audio_lengths.astype(jnp.float32), 1.0)
    powers = jnp.sum(wet * wet, axis=-1) / count[:, None] + 1e-12  # [batch, 2]
    noise_gain = jnp.sqrt(powers[:, 0] / powers[:, 1] * 10.0 ** (-snr_db.astype(jnp.float32) / 10.0))
    mix = wet[:, 0] + noise_gain[:, None] * wet[:, 1]
    peak = jnp.max(jnp.abs(mix), axis=-1)
    scale = jnp.where(peak > CLIP_PEAK, CLIP_PEAK / jnp.maximum(peak, 1e-12), 1.0)
    return mix * scale[:, None]


def on_mix(loss_fn, norm: dict, clean_norm: dict):
    """A loss of the trainer's contract on `features` + `clean_features` made into one on
    on-the-fly batches (BATCH_KEYS): the mix is made in the step, then the student's input is
    its LFBE with the student's normalisation `norm`, and the online teacher's (`clean_features`)
    the clean audio's LFBE with the teacher's `clean_norm`."""

    def loss(params, batch, rng, train=True, **frozen):
        features, paddings = features_of_mix(batch, norm, clean_norm)
        rest = {k: v for k, v in batch.items() if k not in BATCH_KEYS}
        return loss_fn(params, {**rest, **features, "feature_paddings": paddings}, rng, train, **frozen)

    return loss


def features_of_mix(batch: dict, norm: dict, clean_norm: dict | None):
    """({'features'[, 'clean_features']} [batch, frames, dim], feature_paddings) of an on-the-fly batch."""
    mix = reverberant_mix(*(batch[k] for k in BATCH_KEYS))
    features, paddings = device_features.from_norm(mix, batch["audio_lengths"], norm)
    out = {"features": features}
    if clean_norm is not None:
        out["clean_features"], _ = device_features.from_norm(batch["audio"], batch["audio_lengths"], clean_norm)
    return out, paddings
