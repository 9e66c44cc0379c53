"""What every neural stage of the asr recipe shares: LFBE features of a manifest, their
normalisation, posteriors of a trained model, and loading a trained system read-only.

Features are computed in JAX (tsasr.audio.lfbe, jitted once per padded length) from raw
audio and kept in host memory per stage; the built-in corpus is ~100 MB of features.
Normalisation statistics belong to the model that was trained with them and are saved
beside its checkpoint (`norm.json`). Nothing here trains or decodes.
"""

from __future__ import annotations

import functools
import json
import logging
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from tsasr.audio import io as audio_io
from tsasr.audio import lfbe as lfbe_lib
from tsasr.data import batching
from tsasr.data import manifest
from tsasr.data import padded
from tsasr.models import build_model
from tsasr.train import checkpoint
from tsasr.train import loop

# What an acoustic-model example may carry: all frame-level, at the feature frame rate.
BATCH_KEYS = {
    "features": batching.FRAME,  # normalised LFBE [frames, 64]
    "senones": batching.FRAME,  # alignment [frames] (-1: no hard target on that frame)
    "soft_ids": batching.FRAME,  # teacher's top-k senone ids [frames, k]
    "soft_logits": batching.FRAME,  # their logits [frames, k], highest first
    "soft_probs": batching.FRAME,  # or targets already derived [frames, k]
    "clean_features": batching.FRAME,  # online distillation: the clean twin's features [frames, 64]
}
_AUDIO_LENGTH = padded.round_up(8000)  # audio padded to multiples of 0.5 s: few shapes, little padding
_FRAME_LENGTH = padded.round_up(200)
# Utterances per padded batch of compute_features and log_posteriors; a multi-host decode splits
# its test sets by these batches (evaluate.forward_shares), so each keeps a one-process run's bits.
BATCH = 16
log = logging.getLogger(__name__)


@functools.cache
def _lfbe_fn():
    return jax.jit(lfbe_lib.lfbe)


def compute_features(records: list[dict], desc: str = "features") -> dict[str, np.ndarray]:
    """LFBE [frames, 64] float32 for every record, computed in JAX in padded batches."""
    order = sorted(range(len(records)), key=lambda i: records[i]["duration"])
    audios = {records[i]["id"]: audio_io.read_audio(records[i]["audio"]) for i in order}
    out: dict[str, np.ndarray] = {}
    batches = padded.map_padded(_lfbe_fn(), audios, BATCH, _AUDIO_LENGTH)
    total = -(-len(audios) // BATCH)
    for batch, (features, _) in tqdm(batches, total=total, desc=desc, unit="batch", leave=False, disable=None):
        features = np.asarray(features)
        for row, (utt, samples) in enumerate(zip(batch.ids, batch.lengths)):
            frames = lfbe_lib.num_frames(samples)
            if frames < 1:
                raise ValueError(f"utterance {utt!r}: {samples} samples is shorter than one 25 ms frame")
            out[utt] = features[row, :frames]
    return out


def subtract_utterance_mean(features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each utterance's LFBE minus its own mean over frames (Kaldi's apply-cmvn, per utterance).

    A recording's level and its channel's spectral colouring are a constant offset of log
    mel energies; this removes them, so a model trained on one level and microphone hears
    another the same way.
    """
    return {k: v - v.mean(axis=0, keepdims=True) for k, v in features.items()}


def normalisation(features: dict[str, np.ndarray], utterance_mean: bool = False) -> dict:
    """The normalisation a model is trained with (saved beside it as norm.json): optionally the
    per-utterance mean removed first, then global mean and variance over the training frames."""
    if utterance_mean:
        features = subtract_utterance_mean(features)
    stats = lfbe_lib.MeanVarStats(next(iter(features.values())).shape[1])
    for f in features.values():
        stats.add(f)
    mean, std = stats.finalize()
    return {"mean": mean.tolist(), "std": std.tolist(), "utterance_mean": bool(utterance_mean)}


def normalise(features: dict[str, np.ndarray], norm: dict) -> dict[str, np.ndarray]:
    """Applies a model's normalisation (`normalisation`'s dict; older ones lack `utterance_mean`)."""
    if norm.get("utterance_mean", False):
        features = subtract_utterance_mean(features)
    mean, std = np.asarray(norm["mean"], np.float32), np.asarray(norm["std"], np.float32)
    return {k: (v - mean) / std for k, v in features.items()}


def read(workdir: pathlib.Path, relative: str) -> list[dict]:
    return manifest.read_manifest(pathlib.Path(workdir) / relative)


@functools.cache
def _forward_fn(model):
    def forward(params, features, paddings):
        logits, _ = model.apply({"params": params}, features, paddings, train=False)
        return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)

    return jax.jit(forward)


def log_posteriors(model, params, features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """log softmax of the model's logits per utterance, [frames', senones]."""
    forward = functools.partial(_forward_fn(model), params)
    ordered = {u: features[u] for u in sorted(features, key=lambda u: len(features[u]))}
    out = {}
    for batch, result in padded.map_padded(forward, ordered, BATCH, _FRAME_LENGTH):
        result = np.asarray(result)
        factor = -(-batch.values.shape[1] // result.shape[1])
        for row, (u, frames) in enumerate(zip(batch.ids, batch.lengths)):
            out[u] = result[row, : -(-frames // factor)]
    return out


def load_system(workdir: pathlib.Path, name: str):
    """(model, params, norm) of a trained system under WORKDIR/<name>, read-only.

    The frozen teacher is data: its params are loaded for forward passes only, never
    differentiated or re-saved. A system evaluated on dev during training is loaded from its
    best state on dev (tsasr.train.loop.best_checkpoint), else from its last.
    """
    directory = pathlib.Path(workdir) / name
    if not (directory / "model.json").exists():
        raise FileNotFoundError(f"{directory}: no trained model (model.json missing); run its stage first")
    fields = json.loads((directory / "model.json").read_text())
    model = build_model(fields)
    norm = json.loads((directory / "norm.json").read_text())
    params = checkpoint.load_params(loop.best_checkpoint(str(directory)), abstract_params(model, len(norm["mean"])))
    return model, params, norm


def abstract_params(model, feature_dim: int, members: int | None = None):
    """The shapes of `model`'s params (stacked over `members`), on this process's first device."""
    abstract = jax.eval_shape(
        lambda: model.init(
            {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(0)},
            jnp.zeros((1, 12, feature_dim)),
            jnp.zeros((1, 12)),
        )["params"]
    )
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])  # this process's: inference is per process
    lead = () if members is None else (members,)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(lead + x.shape, x.dtype, sharding=device), abstract)
