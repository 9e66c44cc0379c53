"""Per-vector / per-window losses (which are also the anomaly scores) and the trainer's loss
functions, `(params, batch, rng, train) -> (loss, metrics, weight)`, for one member (machine type)
of a members-stacked run.

A batch row holds one training clip of every machine type side by side: `features`
[batch, frames, types * 64] and `labels` [batch, types] (the clip's machine-ID index within its
type). Member m (type m) reads its own 64 bands and labels through its member inputs:
`member` (m), `mean`/`std` (its type's per-band log-mel statistics) and `num_ids`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tsasr.recipes.anomaly import features as features_lib


def squared_error(reconstruction, target):
    """[..., dim] -> [...]: mean squared error per vector (the baseline's score per vector)."""
    return jnp.mean(jnp.square(reconstruction - target), -1)


def gaussian_nll(x, mean, log_scale):
    """[..., dim] -> [...]: negative log-likelihood of x under independent Gaussians, averaged
    over the dimensions (nats per dimension)."""
    z = (x - mean) * jnp.exp(-log_scale)
    return jnp.mean(0.5 * jnp.log(2 * jnp.pi) + log_scale + 0.5 * jnp.square(z), -1)


def id_nll(logits, labels):
    """logits [..., classes], labels [...] int -> [...]: -log softmax(logits)[label]."""
    log_probs = jax.nn.log_softmax(logits, -1)
    return -jnp.take_along_axis(log_probs, labels[..., None].astype(jnp.int32), -1)[..., 0]


def masked_mean(values, paddings):
    """Mean of `values` over entries whose padding is 0, and their count."""
    weights = 1.0 - paddings
    count = jnp.sum(weights)
    return jnp.sum(values * weights) / jnp.maximum(count, 1.0), count


def member_view(batch):
    """Member m's features [batch, frames, 64], paddings [batch, frames], labels [batch]."""
    m = batch["member"]
    bands = features_lib.N_MELS
    x = jax.lax.dynamic_slice_in_dim(batch["features"], m * bands, bands, axis=-1)
    labels = jnp.take(batch["labels"], m, axis=1) if "labels" in batch else None
    return x, batch["feature_paddings"], labels


def normalise(x, batch):
    return (x - batch["mean"]) / batch["std"]


def warp(features, shift: int):
    """Spectral warping: the log-mel image moved up by `shift` bands (the top bands drop out,
    the lowest band repeats): the same machine with its spectrum shifted, a pseudo-ID."""
    if shift == 0:
        return features
    return jnp.concatenate([jnp.repeat(features[..., :1], shift, -1), features[..., :-shift]], -1)


def make_ae_loss(model):
    def loss_fn(params, batch, rng, train=True):
        x, paddings, _ = member_view(batch)
        out, vector_paddings = model.apply({"params": params}, x, paddings, train=train, rngs={"dropout": rng})
        target = features_lib.stack_frames(x)
        loss, count = masked_mean(squared_error(out, target), vector_paddings)
        return loss, {}, count

    return loss_fn


def make_made_loss(model):
    def loss_fn(params, batch, rng, train=True):
        x, paddings, _ = member_view(batch)
        x = normalise(x, batch)
        out, vector_paddings = model.apply({"params": params}, x, paddings, train=train, rngs={"dropout": rng})
        dim = out.shape[-1] // 2
        nll = gaussian_nll(features_lib.stack_frames(x), out[..., :dim], out[..., dim:])
        loss, count = masked_mean(nll, vector_paddings)
        return loss, {}, count

    return loss_fn


def make_classifier_loss(model, max_ids: int, warp_bands: int):
    """Cross-entropy over the type's IDs and, with warp_bands > 0, as many pseudo-IDs: each clip
    is, with probability 1/2, warped up by warp_bands bands and labelled max_ids + its ID.
    Logits of ID slots the type does not have (fewer IDs than max_ids) are masked out."""

    def loss_fn(params, batch, rng, train=True):
        x, paddings, labels = member_view(batch)
        x = normalise(x, batch)
        if warp_bands > 0:
            flip = jax.random.bernoulli(rng, 0.5, (x.shape[0],))
            x = jnp.where(flip[:, None, None], warp(x, warp_bands), x)
            labels = jnp.where(flip, labels + max_ids, labels)
        logits, window_paddings = model.apply({"params": params}, x, paddings, train=train, rngs={"dropout": rng})
        logits = mask_missing_ids(logits, batch["num_ids"], max_ids)
        nll = id_nll(logits, jnp.broadcast_to(labels[:, None], logits.shape[:2]))
        loss, count = masked_mean(nll, window_paddings)
        accuracy, _ = masked_mean((jnp.argmax(logits, -1) == labels[:, None]).astype(jnp.float32), window_paddings)
        return loss, {"window_accuracy": accuracy}, count

    return loss_fn


def mask_missing_ids(logits, num_ids, max_ids: int):
    slot = jnp.arange(logits.shape[-1]) % max_ids
    return jnp.where(slot < num_ids, logits, -1e9)
