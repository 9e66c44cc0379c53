"""Front-ends and the stage-1 network.

Two inputs from the same framing (25 ms Povey window, 10 ms shift, pre-emphasis, 512-point FFT):
- `lfbe`: 64 log-mel filterbank energies (tsasr.audio.lfbe, fixed filters);
- `dft`: the 257 log power-spectrum bins (the DFT feature), on which the network learns its own
  filterbank.

One network family for both, the time-delayed bottleneck highway network (TDB-HW) of Guo,
Kumatani et al.: a linear bottleneck layer on each frame's input (on DFT bins it is a learned
filterbank), a time-delayed window that stacks the bottleneck outputs of frames t+o for o in
`window`, a ReLU layer, highway layers (y = T(h) * H(h) + (1 - T(h)) * h), and the output layer
over the spotter's targets. The LFBE system gets a wider bottleneck so that both systems have
the same number of parameters (`matched_bottleneck`): the comparison is of front-ends at a
matched budget. The network's right context is max(window) frames: the detector's latency.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from tsasr.audio import lfbe as lfbe_lib
from tsasr.models.tdnn import splice

DIMS = {"lfbe": 64, "dft": lfbe_lib.LfbeConfig().fft_size // 2 + 1}


@dataclasses.dataclass(frozen=True)
class TdbHighwayConfig:
    num_targets: int
    input_dim: int
    bottleneck: int = 24  # units of the per-frame linear bottleneck (the learned filterbank on DFT)
    window: tuple[int, ...] = (-12, -8, -4, -2, 0, 2, 4)  # time-delayed window: frame offsets stacked
    hidden: int = 64  # units of the ReLU layer and of every highway layer
    highway_layers: int = 2


class TdbHighway(nn.Module):
    config: TdbHighwayConfig

    @nn.compact
    def __call__(self, features, paddings, train: bool = False):
        """features [batch, frames, input_dim], paddings [batch, frames] -> (logits, paddings)."""
        del train
        cfg = self.config
        mask = (1.0 - paddings)[..., None].astype(features.dtype)
        x = nn.Dense(cfg.bottleneck, name="bottleneck")(features) * mask
        x = splice(x, tuple(cfg.window))
        h = nn.LayerNorm(name="norm")(nn.relu(nn.Dense(cfg.hidden, name="hidden")(x)))
        for i in range(cfg.highway_layers):
            gate = nn.sigmoid(nn.Dense(cfg.hidden, bias_init=nn.initializers.constant(-1.0), name=f"gate_{i}")(h))
            h = gate * nn.relu(nn.Dense(cfg.hidden, name=f"highway_{i}")(h)) + (1.0 - gate) * h
        return nn.Dense(cfg.num_targets, name="output")(h), paddings


def num_params(cfg: TdbHighwayConfig) -> int:
    window = len(cfg.window)
    count = cfg.input_dim * cfg.bottleneck + cfg.bottleneck
    count += window * cfg.bottleneck * cfg.hidden + cfg.hidden + 2 * cfg.hidden
    count += cfg.highway_layers * 2 * (cfg.hidden * cfg.hidden + cfg.hidden)
    return count + cfg.hidden * cfg.num_targets + cfg.num_targets


def model_config(front_end: str, num_targets: int, net) -> TdbHighwayConfig:
    """The network for a front-end; LFBE's bottleneck widened to DFT's parameter count."""
    base = TdbHighwayConfig(
        num_targets=num_targets,
        input_dim=DIMS["dft"],
        bottleneck=int(net.bottleneck),
        window=tuple(int(o) for o in net.window),
        hidden=int(net.hidden),
        highway_layers=int(net.highway_layers),
    )
    if front_end == "dft":
        return base
    if front_end != "lfbe":
        raise ValueError(f"front end must be 'lfbe' or 'dft', not {front_end!r}")
    return matched_bottleneck(dataclasses.replace(base, input_dim=DIMS["lfbe"]), num_params(base))


def matched_bottleneck(cfg: TdbHighwayConfig, budget: int) -> TdbHighwayConfig:
    """cfg with the bottleneck width whose parameter count is closest to `budget`."""
    best = min(
        range(1, 8 * cfg.bottleneck + 1), key=lambda b: abs(num_params(dataclasses.replace(cfg, bottleneck=b)) - budget)
    )
    return dataclasses.replace(cfg, bottleneck=best)


def _features(audio, paddings):
    config = lfbe_lib.LfbeConfig()
    mel, feature_paddings = lfbe_lib.lfbe(audio, paddings, config)
    frames = lfbe_lib.frame_signal(audio.astype(jnp.float32), config)
    frames = frames - jnp.mean(frames, axis=-1, keepdims=True)
    previous = jnp.concatenate([frames[..., :1], frames[..., :-1]], axis=-1)
    frames = (frames - config.preemph_coeff * previous) * jnp.asarray(lfbe_lib.povey_window(config.window_size))
    spectrum = jnp.fft.rfft(frames, n=config.fft_size, axis=-1)
    power = jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2
    dft = jnp.log(jnp.maximum(power, lfbe_lib.FLT_EPSILON)) * (1.0 - feature_paddings)[..., None]
    return mel, dft, feature_paddings


features = jax.jit(_features)  # (audio [batch, samples], paddings) -> (lfbe, dft, feature paddings)
