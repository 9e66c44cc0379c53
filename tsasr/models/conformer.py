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
import jax
import jax.numpy as jnp
import numpy as np

from tsasr.models import subsampling
from tsasr.models.dense import Dense


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
        y = Dense(self.hidden)(nn.LayerNorm()(x))
        y = nn.Dropout(self.dropout, deterministic=not train)(nn.swish(y))
        y = Dense(self.dim)(y)
        return nn.Dropout(self.dropout, deterministic=not train)(y)


def _shift_sum(x, kernel, left: int):
    """sum_i x[:, t + i - left] * kernel[i] over the kernel's width, zeros beyond the edges, in f32."""
    width, frames = kernel.shape[0], x.shape[1]
    padded = jnp.pad(x, ((0, 0), (left, width - 1 - left), (0, 0))).astype(jnp.float32)
    kernel = kernel.astype(jnp.float32)
    return sum(padded[:, i : i + frames] * kernel[i] for i in range(width))


@jax.custom_vjp
def depthwise_conv(x, kernel):
    """y[b, t, d] = sum_i x[b, t + i - (width - 1) // 2, d] * kernel[i, d], zeros beyond the edges:
    nn.Conv(feature_group_count=dim, padding="SAME")'s cross-correlation, as `width` shifted
    multiply-adds that XLA fuses into one loop. XLA's CPU convolution takes 12-22 ms for the
    forward and 55 ms forward + backward of [8, 128, 256] at width 15; this 0.3 ms and 3 ms.
    The hand-written VJP is the same form: dx correlates dy with the flipped kernel, and
    dkernel[i] sums x shifted by i times dy (autodiff of the sum takes 14 ms).

    x [batch, frames, dim], kernel [width, dim] -> [batch, frames, dim] in x's dtype.
    """
    return _shift_sum(x, kernel, (kernel.shape[0] - 1) // 2).astype(x.dtype)


def _depthwise_conv_fwd(x, kernel):
    return depthwise_conv(x, kernel), (x, kernel)


def _depthwise_conv_bwd(residuals, dy):
    x, kernel = residuals
    width, frames = kernel.shape[0], x.shape[1]
    left = (width - 1) // 2
    dx = _shift_sum(dy, kernel[::-1], width - 1 - left).astype(x.dtype)
    padded = jnp.pad(x, ((0, 0), (left, width - 1 - left), (0, 0))).astype(jnp.float32)
    dy = dy.astype(jnp.float32)
    dkernel = jnp.stack([jnp.sum(padded[:, i : i + frames] * dy, axis=(0, 1)) for i in range(width)])
    return dx, dkernel.astype(kernel.dtype)


depthwise_conv.defvjp(_depthwise_conv_fwd, _depthwise_conv_bwd)


class DepthwiseConv(nn.Module):
    """Depthwise 1-D convolution over frames, 'SAME' padding: nn.Conv(features, (width,),
    feature_group_count=features)'s parameters (kernel [width, 1, features], bias) and result,
    computed by depthwise_conv."""

    features: int
    width: int

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (self.width, 1, self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        return depthwise_conv(x, kernel[:, 0].astype(x.dtype)) + bias.astype(x.dtype)


class ConvModule(nn.Module):
    dim: int
    kernel: int
    dropout: float

    @nn.compact
    def __call__(self, x, mask, train):
        y = nn.glu(Dense(2 * self.dim)(nn.LayerNorm()(x)), axis=-1)
        # Zero the pads so the depthwise convolution sees silence beyond the utterance.
        # Named as nn.Conv was: checkpoints of earlier conformers load, and init draws the same weights.
        y = DepthwiseConv(self.dim, self.kernel, name="Conv_0")(y * mask)
        y = Dense(self.dim)(nn.swish(nn.LayerNorm()(y)))
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
        x = Dense(cfg.dim, name="input")(x * mask)
        x = x + jnp.asarray(sinusoidal_positions(x.shape[1], cfg.dim), x.dtype)
        x = nn.Dropout(cfg.dropout, deterministic=not train)(x)
        # Queries attend to real keys only: [batch, 1 (heads), queries, keys].
        attention_mask = nn.make_attention_mask(jnp.ones_like(valid), valid)
        for i in range(cfg.num_layers):
            x = ConformerBlock(cfg, name=f"block_{i}")(x, mask, attention_mask, train)
        logits = Dense(cfg.num_senones, name="output")(x)
        return logits, paddings
