"""Normalised LFBE of a streamed batch, computed on the device inside the jitted step.

The streaming loader (tsasr.data.loader) hands the step int16 PCM audio and its lengths, not
features; this turns them into what the acoustic models read, the same values the in-memory
path gives (LFBE of the audio, then a model's normalisation: optionally each utterance's own
mean over its real frames removed, then (x - mean) / std), with padded frames 0. The
normalisation statistics come from one streamed pass (`normalisation`), host memory O(batch).
No files are read here.
"""

import functools
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np

from tsasr.audio import lfbe as lfbe_lib

PCM_SCALE = 32768.0  # int16 PCM -> [-1, 1), as tsasr.audio.io reads a 16-bit wav


def normalised_lfbe(audio, audio_lengths, mean, std, utterance_mean: bool = False, config=lfbe_lib.LfbeConfig()):
    """Features of a padded batch of int16 audio.

    Args:
      audio: [batch, samples] int16 (or float in [-1, 1]); the utterance is each row's prefix.
      audio_lengths: [batch] int samples of each row that are audio.
      mean, std: [dim] the global normalisation (a norm.json's `mean` and `std`).
      utterance_mean: subtract each utterance's mean over its real frames first (norm.json's
        `utterance_mean`).
      config: the filterbank.

    Returns:
      features [batch, frames, dim] float32 (0 on padded frames), feature_paddings [batch, frames].
    """
    if jnp.issubdtype(audio.dtype, jnp.integer):
        audio = audio.astype(jnp.float32) / PCM_SCALE
    paddings = (jnp.arange(audio.shape[1])[None, :] >= audio_lengths[:, None]).astype(jnp.float32)
    features, feature_paddings = lfbe_lib.lfbe(audio, paddings, config)
    real = (1.0 - feature_paddings)[..., None]
    if utterance_mean:
        count = jnp.maximum(jnp.sum(real, axis=1, keepdims=True), 1.0)
        features = features - jnp.sum(features * real, axis=1, keepdims=True) / count
    features = (features - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
    return features * real, feature_paddings


def from_norm(audio, audio_lengths, norm: dict, config=lfbe_lib.LfbeConfig()):
    """`normalised_lfbe` with a model's normalisation dict (tsasr.recipes.asr.acoustic.normalisation's)."""
    return normalised_lfbe(
        audio, audio_lengths, norm["mean"], norm["std"], bool(norm.get("utterance_mean", False)), config
    )


def on_audio(loss_fn, norm: dict, config=lfbe_lib.LfbeConfig()):
    """A loss of the trainer's contract (`(params, batch, rng, train[, frozen])`, tsasr.train.step)
    on `features` made into one on streamed batches (`audio`, `audio_lengths`, tsasr.data.loader):
    the normalised LFBE is computed inside the step, then `loss_fn` sees the batch as it would
    from the in-memory path (`features` beside `feature_paddings` and the targets)."""

    def loss(params, batch, rng, train=True, **frozen):
        features, _ = from_norm(batch["audio"], batch["audio_lengths"], norm, config)
        rest = {k: v for k, v in batch.items() if k not in ("audio", "audio_lengths")}
        return loss_fn(params, {**rest, "features": features}, rng, train, **frozen)

    return loss


@functools.cache
def _unnormalised(utterance_mean: bool, config: lfbe_lib.LfbeConfig):
    return jax.jit(lambda audio, lengths: normalised_lfbe(audio, lengths, 0.0, 1.0, utterance_mean, config))


def normalisation(
    audios: Iterable[np.ndarray],
    utterance_mean: bool = False,
    batch_size: int = 16,
    chunk: int = 256,
    config=lfbe_lib.LfbeConfig(),
) -> dict:
    """The normalisation dict of tsasr.recipes.asr.acoustic.normalisation (global mean and std over
    every real frame, optionally after each utterance's own mean), from int16 audio streamed one
    utterance at a time (e.g. the records of tsasr.data.records.read_shard): LFBE on the device in
    padded batches of `batch_size`, float64 sums on the host. `chunk` utterances are held at once,
    sorted by length so a batch wastes little padding; rows are padded to multiples of 0.5 s.
    """
    compute = _unnormalised(bool(utterance_mean), config)
    stats = lfbe_lib.MeanVarStats(config.num_bins)

    def add(pending: list[np.ndarray]) -> None:
        pending = sorted(pending, key=len)
        for start in range(0, len(pending), batch_size):
            rows = pending[start : start + batch_size]
            width = -(-max(len(r) for r in rows) // 8000) * 8000
            audio = np.zeros((batch_size, width), rows[0].dtype)
            lengths = np.zeros(batch_size, np.int32)  # filler rows: no samples, every frame padding
            for row, samples in enumerate(rows):
                audio[row, : len(samples)], lengths[row] = samples, len(samples)
            features, paddings = compute(audio, lengths)
            stats.add(np.asarray(features), np.asarray(paddings))

    pending = []
    for audio in audios:
        pending.append(np.asarray(audio))
        if len(pending) == chunk:
            add(pending)
            pending = []
    if pending:
        add(pending)
    mean, std = stats.finalize()
    return {"mean": mean.tolist(), "std": std.tolist(), "utterance_mean": bool(utterance_mean)}
