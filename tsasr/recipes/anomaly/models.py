"""The three systems' networks (Flax), each called as the trainer's model contract:
model.apply(variables, features [batch, frames, 64 log-mel bands], paddings [batch, frames],
train=...) -> (outputs, output paddings), outputs per 5-frame vector or per window.

- DenseAE: the official DCASE 2020 Task 2 baseline: Dense 128 x4 -> 8 -> 128 x4 -> 320, each
  hidden layer Dense + BatchNorm + ReLU, on 5 stacked frames (320-d).
- IdClassifier: a small MobileNetV2-like CNN on windows of log-mel frames -> ID logits per window.
- GroupMADE: a MADE whose autoregressive order runs over groups of mel bands (each group the
  same bands of all 5 stacked frames), outputting a Gaussian mean and log-scale per input.

BatchNorm without a trainer that carries batch_stats: `PopulationBatchNorm` normalises with
the batch's statistics when training (over real vectors only, padding excluded) exactly as
BatchNorm does; for inference its statistics come from the `population` collection, which the
training stage fills after training with one pass over the type's training vectors
(`collect=True`, mutable=['population']): the statistics BatchNorm's running averages
estimate, computed exactly ("precise BN") instead of by an exponential moving average.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tsasr.recipes.anomaly import features as features_lib


class PopulationBatchNorm(nn.Module):
    epsilon: float = 1e-3  # Keras' BatchNormalization default, as the baseline used

    @nn.compact
    def __call__(self, x, mask, batch_statistics: bool, collect: bool = False):
        dim = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (dim,))
        bias = self.param("bias", nn.initializers.zeros, (dim,))
        if batch_statistics or collect:
            weights = mask[..., None].astype(x.dtype)
            count = jnp.maximum(jnp.sum(weights), 1.0)
            mean = jnp.sum(x * weights, axis=tuple(range(x.ndim - 1))) / count
            var = jnp.sum(jnp.square(x - mean) * weights, axis=tuple(range(x.ndim - 1))) / count
            if collect:
                self.put_variable("population", "mean", mean)
                self.put_variable("population", "var", var)
        else:
            mean = self.variable("population", "mean", jnp.zeros, (dim,)).value
            var = self.variable("population", "var", jnp.ones, (dim,)).value
        return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias


@dataclasses.dataclass(frozen=True)
class AEConfig:
    hidden: int = 128
    bottleneck: int = 8
    layers: int = 4  # hidden layers on each side of the bottleneck
    context: int = features_lib.CONTEXT
    bands: int = features_lib.N_MELS


class DenseAE(nn.Module):
    config: AEConfig = AEConfig()

    @nn.compact
    def __call__(self, features, paddings, train: bool = False, collect: bool = False):
        c = self.config
        x = features_lib.stack_frames(features, c.context)
        vector_paddings = features_lib.stack_paddings(paddings, c.context)
        mask = 1.0 - vector_paddings
        h = x
        for width in (c.hidden,) * c.layers + (c.bottleneck,) + (c.hidden,) * c.layers:
            h = nn.Dense(width)(h)
            h = PopulationBatchNorm()(h, mask, train, collect)
            h = nn.relu(h)
        return nn.Dense(c.context * c.bands)(h), vector_paddings


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    num_classes: int = 8  # real IDs (padded to the most IDs of any type) and warped pseudo-IDs
    window: int = 32  # frames per window
    hop: int = 8  # frames between windows
    width: int = 16  # channels of the stem; blocks widen it 1.5x, 2x, 3x
    expansion: int = 4  # inverted-residual expansion factor


def window_starts(frames: int, window: int, hop: int) -> list[int]:
    """Window starts covering `frames` (the last window ends at the last frame)."""
    last = max(frames - window, 0)
    starts = list(range(0, last + 1, hop))
    return starts if starts[-1] == last else starts + [last]


def _patches(x, stride: int):
    """[n, h, w, c] -> [n, h', w', 9, c]: the 3x3 neighbourhoods (zero 'SAME' padding) at the
    stride's positions. Convolutions here are these patches times weights: matmuls and
    elementwise products, which XLA runs far faster on a CPU than grouped convolutions."""
    h, w = x.shape[1], x.shape[2]
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    views = [padded[:, i : i + h : stride, j : j + w : stride] for i in range(3) for j in range(3)]
    return jnp.stack(views, 3)


class Conv3x3(nn.Module):
    """A full 3x3 convolution (stride 1 or 2, 'SAME' padding), no bias."""

    out: int
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        p = _patches(x, self.stride)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (9 * x.shape[-1], self.out))
        return p.reshape(p.shape[:3] + (-1,)) @ kernel


class DepthwiseConv3x3(nn.Module):
    """A depthwise 3x3 convolution: one 3x3 filter per channel."""

    stride: int = 1

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.normal(1 / 3), (9, x.shape[-1]))
        return jnp.einsum("nhwkc,kc->nhwc", _patches(x, self.stride), kernel)


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expansion, depthwise 3x3 (stride), 1x1 linear projection,
    a residual connection when the shape allows."""

    out: int
    stride: int
    expansion: int

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        h = nn.relu6(nn.LayerNorm()(nn.Dense(channels * self.expansion, use_bias=False)(x)))
        h = nn.relu6(nn.LayerNorm()(DepthwiseConv3x3(self.stride)(h)))
        h = nn.LayerNorm()(nn.Dense(self.out, use_bias=False)(h))
        return x + h if self.stride == 1 and channels == self.out else h


class IdClassifier(nn.Module):
    """MobileNetV2-like: stem 3x3 conv (stride 2), inverted residual blocks, 1x1 head, global
    average pool, dense; LayerNorm over channels stands in for BatchNorm (stateless, so the
    trainer needs no batch_stats). Output: logits [batch, windows, num_classes], window paddings."""

    config: ClassifierConfig = ClassifierConfig()

    @nn.compact
    def __call__(self, features, paddings, train: bool = False):
        c = self.config
        batch, frames, bands = features.shape
        if frames < c.window:
            features = jnp.pad(features, ((0, 0), (0, c.window - frames), (0, 0)))
            paddings = jnp.pad(paddings, ((0, 0), (0, c.window - frames)), constant_values=1.0)
            frames = c.window
        starts = window_starts(frames, c.window, c.hop)
        windows = jnp.stack([features[:, s : s + c.window] for s in starts], 1)  # [b, w, window, bands]
        window_paddings = jnp.stack([jnp.max(paddings[:, s : s + c.window], -1) for s in starts], 1)
        x = windows.reshape(batch * len(starts), c.window, bands, 1)
        x = nn.relu6(nn.LayerNorm()(Conv3x3(c.width, 2)(x)))
        for out, stride in ((c.width * 3 // 2, 2), (c.width * 2, 2), (c.width * 3, 1)):
            x = InvertedResidual(out, stride, c.expansion)(x)
        x = nn.relu6(nn.LayerNorm()(nn.Dense(c.width * 8, use_bias=False)(x)))
        x = jnp.mean(x, axis=(1, 2))
        logits = nn.Dense(c.num_classes)(x)
        return logits.reshape(batch, len(starts), c.num_classes), window_paddings


@dataclasses.dataclass(frozen=True)
class MADEConfig:
    groups: int = 8  # groups of mel bands: the autoregressive order runs over them (low bands first)
    hidden: int = 256
    layers: int = 2
    context: int = features_lib.CONTEXT
    bands: int = features_lib.N_MELS


def input_groups(config: MADEConfig) -> np.ndarray:
    """The group (0 .. groups-1) of each of the context * bands stacked inputs: band b of any frame
    is in group b * groups // bands."""
    if config.bands % config.groups:
        raise ValueError(f"group_made.groups={config.groups} must divide the {config.bands} mel bands")
    bands = np.tile(np.arange(config.bands), config.context)
    return bands * config.groups // config.bands


def made_masks(config: MADEConfig) -> list[np.ndarray]:
    """[in, out] 0/1 masks: inputs have degree group + 1 (1..G), hidden units degrees cycling over
    1..G-1, outputs (mean and log-scale of each input) the degree of their input; a hidden unit
    sees inputs of degree <= its own, an output sees hidden units of degree < its own, so the
    outputs of group g depend on groups < g only."""
    inputs = input_groups(config) + 1
    hidden = [np.arange(config.hidden) % max(config.groups - 1, 1) + 1 for _ in range(config.layers)]
    masks = [(hidden[0][None, :] >= inputs[:, None])]
    masks += [(b[None, :] >= a[:, None]) for a, b in zip(hidden[:-1], hidden[1:])]
    outputs = np.concatenate([inputs, inputs])
    masks.append(outputs[None, :] > hidden[-1][:, None])
    return [m.astype(np.float32) for m in masks]


class MaskedDense(nn.Module):
    mask: np.ndarray

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.lecun_normal(), self.mask.shape)
        bias = self.param("bias", nn.initializers.zeros, (self.mask.shape[1],))
        return x @ (kernel * jnp.asarray(self.mask)) + bias


class GroupMADE(nn.Module):
    """Outputs [batch, vectors, 2 * 320]: Gaussian means, then log-scales (soft-clipped to +-5)."""

    config: MADEConfig = MADEConfig()

    @nn.compact
    def __call__(self, features, paddings, train: bool = False):
        c = self.config
        x = features_lib.stack_frames(features, c.context)
        vector_paddings = features_lib.stack_paddings(paddings, c.context)
        masks = made_masks(c)
        h = x
        for mask in masks[:-1]:
            h = nn.relu(MaskedDense(mask)(h))
        out = MaskedDense(masks[-1])(h)
        dim = x.shape[-1]
        mean, log_scale = out[..., :dim], 5.0 * jnp.tanh(out[..., dim:] / 5.0)
        return jnp.concatenate([mean, log_scale], -1), vector_paddings
