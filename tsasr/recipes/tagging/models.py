"""Taggers on log-mel features: a VGG-like CNN (teacher, width-scaled students) and a conv + LSTM student.

Contract (tsasr.train.loop): `model.apply(variables, features [batch, frames, 64], paddings
[batch, frames], train=..., rngs=...) -> (outputs, paddings)`, where `outputs` is a dict:

- `logits` [batch, classes]: clip-level tag logits (sigmoid gives each class's presence);
- `layer` [batch, frames', dim]: the activations distillation reads, with a frame axis
  (zero on padded frames); `paddings` [batch, frames'] are that layer's paddings.

The IUSP/SP layer ("layer"): for the CNNs, the output of the LAST conv block (after its
LayerNorm, ReLU and pooling), reshaped to [frames', channels x freq']; for the conv + LSTM
student, the LSTM's outputs [frames / 2, units]. The clip head is the same for both: masked
mean and max over frames' of the layer's features (the CNN's averaged over frequency first),
concatenated, then one Dense to the classes.

Pooling: every CNN block pools frequency by 2 and time by 2, except the last block, which
keeps the time resolution (so a 2 s clip of 198 frames has 24 frames at the IUSP layer with
4 blocks). No BatchNorm: the trainer carries params only (no mutable batch statistics), so
each conv is followed by a LayerNorm over (frequency, channels) at each frame.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class TaggerConfig:
    kind: str = "cnn"  # 'cnn' (VGG-like blocks) or 'lstm' (one strided conv + one LSTM)
    channels: tuple[int, ...] = (16, 32, 64, 128)  # output channels per conv block ('lstm': the one conv's)
    lstm_units: int = 0  # 'lstm': LSTM hidden units
    num_classes: int = 8  # tags (SONYC-UST coarse classes)


def _pool_paddings(paddings, factor: int):
    """A pooled frame is padding when any frame it covers is (frames beyond a multiple are dropped)."""
    frames = paddings.shape[1] // factor * factor
    return paddings[:, :frames].reshape(paddings.shape[0], -1, factor).max(-1)


def _head(features, paddings, num_classes):
    """Masked mean and max over frames of [batch, frames, dim] -> Dense -> [batch, classes]."""
    keep = (1.0 - paddings)[..., None]
    count = jnp.maximum(keep.sum(1), 1.0)
    mean = (features * keep).sum(1) / count
    peak = jnp.max(jnp.where(keep > 0, features, -1e9), axis=1)
    return nn.Dense(num_classes, name="classifier")(jnp.concatenate([mean, peak], -1))


class Tagger(nn.Module):
    config: TaggerConfig

    @nn.compact
    def __call__(self, features, paddings, train: bool = False):
        del train  # no dropout: the same function trains and scores
        cfg = self.config
        x = features[..., None]  # [batch, frames, freq, 1]
        if cfg.kind == "cnn":
            for i, channels in enumerate(cfg.channels):
                x = nn.Conv(channels, (3, 3), padding="SAME", name=f"conv{i}")(x)
                x = nn.relu(nn.LayerNorm(reduction_axes=(-2, -1), name=f"norm{i}")(x))
                time = 1 if i == len(cfg.channels) - 1 else 2
                x = nn.max_pool(x, (time, 2), strides=(time, 2), padding="VALID")
                paddings = _pool_paddings(paddings, time)
            batch, frames, freq, channels = x.shape
            layer = x.reshape(batch, frames, freq * channels) * (1.0 - paddings)[..., None]
            pooled = x.mean(2)  # [batch, frames, channels]
        elif cfg.kind == "lstm":
            x = nn.Conv(cfg.channels[0], (5, 5), strides=(2, 2), padding="SAME", name="conv0")(x)
            x = nn.relu(nn.LayerNorm(reduction_axes=(-2, -1), name="norm0")(x))
            paddings = paddings[:, ::2]
            batch, frames, freq, channels = x.shape
            lengths = jnp.sum(1.0 - paddings, axis=1).astype(jnp.int32)
            rnn = nn.RNN(nn.OptimizedLSTMCell(cfg.lstm_units), name="lstm")
            layer = rnn(x.reshape(batch, frames, freq * channels), seq_lengths=lengths)
            layer = layer * (1.0 - paddings)[..., None]
            pooled = layer
        else:
            raise ValueError(f"tagger kind must be 'cnn' or 'lstm', got {cfg.kind!r}")
        logits = _head(pooled, paddings, cfg.num_classes)
        return {"logits": logits, "layer": layer}, paddings


def build(kind: str, channels, lstm_units: int = 0, num_classes: int = 8) -> Tagger:
    return Tagger(
        TaggerConfig(
            kind=kind, channels=tuple(int(c) for c in channels), lstm_units=int(lstm_units), num_classes=num_classes
        )
    )
