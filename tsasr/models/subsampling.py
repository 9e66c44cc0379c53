"""Frame subsampling shared by the acoustic models, and the matching target helper.

Frames are stacked, not strided away: output frame j sees input frames
[j*factor, (j+1)*factor), so nothing is thrown away before the first layer. Output frame
j is real iff input frame j*factor is real, i.e. ceil(real_frames / factor) real frames,
which is exactly what `subsample_targets` keeps of the targets.
"""

import jax.numpy as jnp

VALID_FACTORS = (1, 2, 3)


def check_factor(factor: int) -> int:
    if factor not in VALID_FACTORS:
        raise ValueError(f"subsampling factor must be one of {VALID_FACTORS}, got {factor}.")
    return factor


def stack_frames(features, paddings, factor: int):
    """[batch, frames, dim] -> [batch, ceil(frames / factor), factor * dim], with paddings.

    Padded input frames are zeroed first: the last real output frame may stack real and
    padded input frames, and must not depend on what the padding contains.
    """
    check_factor(factor)
    features = features * (1.0 - paddings)[..., None].astype(features.dtype)
    if factor == 1:
        return features, paddings
    batch, frames, dim = features.shape
    extra = (-frames) % factor
    features = jnp.pad(features, ((0, 0), (0, extra), (0, 0)))
    stacked = features.reshape(batch, (frames + extra) // factor, factor * dim)
    return stacked, paddings[:, ::factor]


def subsample_targets(targets, paddings, factor: int):
    """Keeps every factor-th frame of per-frame targets ([batch, frames, ...]) and paddings.

    Matches `stack_frames`: the target of output frame j is the target of input frame
    j*factor.
    """
    check_factor(factor)
    return targets[:, ::factor], paddings[:, ::factor]


def subsampled_length(frames: int, factor: int) -> int:
    return -(-frames // factor)
