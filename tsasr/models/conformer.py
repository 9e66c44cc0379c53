"""Small Conformer acoustic model (Gulati et al. 2020) with padding masks.

Differences from the paper, each for a reason: LayerNorm instead of BatchNorm in the
convolution module (no batch statistics: outputs are independent of the other
utterances in the batch and of trailing padding); absolute sinusoidal positions added
once at the input (cheap, and real frames keep their positions whatever the padding);
frame stacking (factor 1-3) instead of a convolutional 4x front end, because hybrid
HMM targets are at a 10-30 ms rate.
"""

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from tsasr.models import subsampling


@dataclasses.dataclass(frozen=True)
class ConformerConfig:
    num_senones: int
    dim: int = 256  # Model width.
    num_layers: int = 6
    num_heads: int = 4
    ff_multiplier: int = 4  # Feed-forward hidden = ff_multiplier * dim.
    conv_kernel: int = 15  # Depthwise convolution width in frames.
    dropout: float = 0.0
    subsampling: int = 1  # Frame stacking factor before the first layer: 1, 2 or 3.


def sinusoidal_positions(frames: int, dim: int) -> np.ndarray:
    """Transformer sinusoidal position encodings, [frames, dim]."""
    position = np.arange(frames)[:, None]
    scale = np.exp(-np.log(10000.0) * np.arange(0, dim, 2) / dim)
    encoding = np.zeros((frames, dim), np.float32)
    encoding[:, 0::2] = np.sin(position * scale)
    encoding[:, 1::2] = np.cos(position * scale)[:, : dim // 2]
    return encoding


class FeedForward(nn.Module):
    dim: int
    hidden: int
    dropout: float

    @nn.compact
    def __call__(self, x, train):
        y = nn.Dense(self.hidden)(nn.LayerNorm()(x))
        y = nn.Dropout(self.dropout, deterministic=not train)(nn.swish(y))
        y = nn.Dense(self.dim)(y)
        return nn.Dropout(self.dropout, deterministic=not train)(y)


class ConvModule(nn.Module):
    dim: int
    kernel: int
    dropout: float

    @nn.compact
    def __call__(self, x, mask, train):
        y = nn.glu(nn.Dense(2 * self.dim)(nn.LayerNorm()(x)), axis=-1)
        # Zero the pads so the depthwise convolution sees silence beyond the utterance.
        y = nn.Conv(self.dim, (self.kernel,), padding="SAME", feature_group_count=self.dim)(y * mask)
        y = nn.Dense(self.dim)(nn.swish(nn.LayerNorm()(y)))
        return nn.Dropout(self.dropout, deterministic=not train)(y)


class ConformerBlock(nn.Module):
    config: ConformerConfig

    @nn.compact
    def __call__(self, x, mask, attention_mask, train):
        cfg = self.config
        hidden = cfg.ff_multiplier * cfg.dim
        x = x + 0.5 * FeedForward(cfg.dim, hidden, cfg.dropout, name="ff_in")(x, train)
        y = nn.MultiHeadDotProductAttention(
            cfg.num_heads, dropout_rate=cfg.dropout, deterministic=not train, name="attention"
        )(nn.LayerNorm()(x), mask=attention_mask)
        x = x + nn.Dropout(cfg.dropout, deterministic=not train)(y)
        x = x + ConvModule(cfg.dim, cfg.conv_kernel, cfg.dropout, name="conv")(x, mask, train)
        x = x + 0.5 * FeedForward(cfg.dim, hidden, cfg.dropout, name="ff_out")(x, train)
        return nn.LayerNorm()(x)


class Conformer(nn.Module):
    config: ConformerConfig

    @nn.compact
    def __call__(self, features, paddings, train: bool = False):
        """features [batch, frames, dim], paddings [batch, frames] (1.0 = pad) ->
        (logits [batch, frames', senones], paddings [batch, frames'])."""
        cfg = self.config
        if cfg.dim % cfg.num_heads:
            raise ValueError(f"conformer: dim={cfg.dim} not divisible by heads={cfg.num_heads}.")
        x, paddings = subsampling.stack_frames(features, paddings, cfg.subsampling)
        valid = paddings < 0.5
        mask = valid[..., None].astype(x.dtype)
        x = nn.Dense(cfg.dim, name="input")(x * mask)
        x = x + jnp.asarray(sinusoidal_positions(x.shape[1], cfg.dim), x.dtype)
        x = nn.Dropout(cfg.dropout, deterministic=not train)(x)
        # Queries attend to real keys only: [batch, 1 (heads), queries, keys].
        attention_mask = nn.make_attention_mask(jnp.ones_like(valid), valid)
        for i in range(cfg.num_layers):
            x = ConformerBlock(cfg, name=f"block_{i}")(x, mask, attention_mask, train)
        logits = nn.Dense(cfg.num_senones, name="output")(x)
        return logits, paddings
