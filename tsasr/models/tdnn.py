"""TDNN / feed-forward acoustic model with frame splicing.

The input is spliced once over `input_context` frames (Kaldi's splicing), then each
layer optionally splices its input at offsets (-d, 0, +d) (a dilated TDNN layer) before
a dense layer. Splicing is a concatenation of shifted copies followed by one big matmul,
which is what makes this model run near the machine's matmul peak.
"""

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from tsasr.models import subsampling


@dataclasses.dataclass(frozen=True)
class TdnnConfig:
    num_senones: int
    hidden: int = 1024  # Units per layer.
    num_layers: int = 6
    input_context: tuple[int, int] = (5, 5)  # Frames spliced to the left and right of t.
    # Per-layer splicing dilation d (offsets -d, 0, +d); 0 = plain feed-forward layer.
    # Empty means all layers are plain.
    dilations: tuple[int, ...] = ()
    subsampling: int = 1  # Frame stacking factor before the first layer: 1, 2 or 3.


def splice(x, offsets):
    """Concatenates x shifted by each offset along frames; out-of-range frames are 0.

    x: [batch, frames, dim] -> [batch, frames, len(offsets) * dim], where block j of
    frame t is x[t + offsets[j]].
    """
    frames = x.shape[1]
    left, right = max(0, -min(offsets)), max(0, max(offsets))
    padded = jnp.pad(x, ((0, 0), (left, right), (0, 0)))
    return jnp.concatenate([padded[:, left + o : left + o + frames] for o in offsets], axis=-1)


class Tdnn(nn.Module):
    config: TdnnConfig

    @nn.compact
    def __call__(self, features, paddings, train: bool = False):
        """features [batch, frames, dim], paddings [batch, frames] (1.0 = pad) ->
        (logits [batch, frames', senones], paddings [batch, frames'])."""
        del train
        cfg = self.config
        dilations = cfg.dilations or (0,) * cfg.num_layers
        if len(dilations) != cfg.num_layers:
            raise ValueError(f"tdnn: {len(dilations)} dilations for {cfg.num_layers} layers.")
        x, paddings = subsampling.stack_frames(features, paddings, cfg.subsampling)
        mask = (1.0 - paddings)[..., None].astype(x.dtype)
        # Masking before every splice makes real frames see zeros beyond the utterance,
        # however much padding follows: outputs on real frames are padding-invariant.
        x = splice(x * mask, range(-cfg.input_context[0], cfg.input_context[1] + 1))
        for i, dilation in enumerate(dilations):
            if dilation:
                x = splice(x * mask, (-dilation, 0, dilation))
            x = nn.Dense(cfg.hidden, name=f"layer_{i}")(x)
            x = nn.LayerNorm(name=f"norm_{i}")(nn.relu(x))
        logits = nn.Dense(cfg.num_senones, name="output")(x)
        return logits, paddings
