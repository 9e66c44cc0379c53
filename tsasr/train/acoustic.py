"""What every neural stage shares: LFBE features of a manifest, posteriors of a trained
model, and decoding and scoring of the test conditions.

Features are computed in JAX (tsasr.audio.lfbe, jitted once per padded length) from raw
audio and kept in host memory per stage; the built-in corpus is ~100 MB of features.
Normalisation statistics belong to the model that was trained with them and are saved
beside its checkpoint (`norm.json`). Nothing here trains.
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

from tsasr import workdir as wd
from tsasr.audio import io as audio_io
from tsasr.audio import lfbe as lfbe_lib
from tsasr.data import manifest

# Test condition -> manifest (relative to the workdir); the same ids' texts are references.
CONDITIONS = {
    "clean": "corpus/test.jsonl",
    "noisy": "noisy/test_noisy.jsonl",
    "rerecorded": "noisy/test_rerecorded.jsonl",
}
_LENGTH_STEP = 8000  # audio is padded to multiples of 0.5 s: few shapes, little padding
_BATCH = 16
log = logging.getLogger(__name__)


@functools.cache
def _lfbe_fn():
    return jax.jit(lfbe_lib.lfbe)


def compute_features(records: list[dict], desc: str = "features") -> dict[str, np.ndarray]:
    """LFBE [frames, 64] float32 for every record, computed in JAX in padded batches."""
    order = sorted(range(len(records)), key=lambda i: records[i]["duration"])
    out: dict[str, np.ndarray] = {}
    for start in tqdm(range(0, len(order), _BATCH), desc=desc, unit="batch", leave=False, disable=None):
        batch = [records[i] for i in order[start : start + _BATCH]]
        audios = [audio_io.read_audio(r["audio"]) for r in batch]
        length = -(-max(a.size for a in audios) // _LENGTH_STEP) * _LENGTH_STEP
        padded = np.zeros((_BATCH, length), np.float32)
        paddings = np.ones((_BATCH, length), np.float32)
        for row, audio in enumerate(audios):
            padded[row, : audio.size] = audio
            paddings[row, : audio.size] = 0.0
        features, _ = _lfbe_fn()(padded, paddings)
        features = np.asarray(features)
        for row, (record, audio) in enumerate(zip(batch, audios)):
            frames = lfbe_lib.num_frames(audio.size)
            if frames < 1:
                raise ValueError(f"utterance {record['id']!r}: {audio.size} samples is shorter than one 25 ms frame")
            out[record["id"]] = features[row, :frames]
    return out


_TEST_FEATURES: dict[tuple[str, int], dict[str, np.ndarray]] = {}


def _test_features(path: pathlib.Path, records: list[dict]) -> dict[str, np.ndarray]:
    """Unnormalised features of a test manifest, computed once per process.

    Every system (and every member of a sweep) is decoded on the same test sets; the key
    holds the manifest's mtime, so a rewritten manifest is read afresh.
    """
    key = (str(path.resolve()), path.stat().st_mtime_ns)
    if key not in _TEST_FEATURES:
        _TEST_FEATURES[key] = compute_features(records, f"features: {path.name}")
    return _TEST_FEATURES[key]


def normalisation(features: dict[str, np.ndarray]) -> dict:
    stats = lfbe_lib.MeanVarStats(next(iter(features.values())).shape[1])
    for f in features.values():
        stats.add(f)
    mean, std = stats.finalize()
    return {"mean": mean.tolist(), "std": std.tolist()}


def normalise(features: dict[str, np.ndarray], norm: dict) -> dict[str, np.ndarray]:
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


def log_posteriors(model, params, features: dict[str, np.ndarray], bucket: int = 200) -> dict[str, np.ndarray]:
    """log softmax of the model's logits per utterance, [frames', senones]."""
    forward = _forward_fn(model)
    ids = sorted(features, key=lambda u: len(features[u]))
    out = {}
    for start in range(0, len(ids), _BATCH):
        chunk = ids[start : start + _BATCH]
        length = -(-max(len(features[u]) for u in chunk) // bucket) * bucket
        dim = features[chunk[0]].shape[1]
        x = np.zeros((_BATCH, length, dim), np.float32)
        pad = np.ones((_BATCH, length), np.float32)
        for row, u in enumerate(chunk):
            x[row, : len(features[u])] = features[u]
            pad[row, : len(features[u])] = 0.0
        result = np.asarray(forward(params, x, pad))
        factor = -(-length // result.shape[1])
        for row, u in enumerate(chunk):
            out[u] = result[row, : -(-len(features[u]) // factor)]
    return out


def decode_conditions(
    workdir: pathlib.Path, system: str, model, params, norm: dict, config, reference: str | None = None
) -> dict:
    """Decodes every test condition with the model and scores it into results.json.

    Writes hypotheses to WORKDIR/decode/<system>/<condition>.json. With `reference` (a
    system already decoded), adds bootstrap 95 % intervals of this system's WER and the
    probability that it improves on the reference.
    """
    from tsasr.decode import decoder as decoder_lib
    from tsasr.decode import results as results_lib
    from tsasr.decode import scoring

    workdir = pathlib.Path(workdir)
    priors = np.load(workdir / "align" / "priors.npy")
    graph = decoder_lib.Graph.load(workdir / "graph")
    dc = config.decode
    wers, details, ci, p_better = {}, {}, {}, {}
    for condition, relative in CONDITIONS.items():
        if condition not in dc.conditions or not (workdir / relative).exists():
            continue
        records = [r for r in read(workdir, relative) if r.get("text")]
        feats = normalise(_test_features(workdir / relative, records), norm)
        posts = log_posteriors(model, params, feats)
        loglikes = {u: decoder_lib.pseudo_log_likelihoods(p, priors, dc.prior_floor) for u, p in posts.items()}
        hyps, partial = decoder_lib.decode(
            loglikes, graph, dc.acoustic_scale, dc.beam, dc.max_active, workers=config.workers
        )
        refs = {r["id"]: r["text"].split() for r in records}
        result = scoring.wer(refs, hyps)
        result["not_final"] = len(partial)
        wers[condition], details[condition] = result["wer"], result
        if jax.process_index() == 0:  # every process decodes; one writes
            wd.write_json(workdir / "decode" / system / f"{condition}.json", hyps)
        ref_path = workdir / "decode" / (reference or "") / f"{condition}.json"
        if reference and ref_path.exists():
            compared = scoring.compare(
                refs, json.loads(ref_path.read_text()), hyps, replications=dc.bootstrap_replications
            )
            ci[condition] = [compared["b"]["ci95min"], compared["b"]["ci95max"]]
            p_better[condition] = compared["p_b_better"]
        log.info("%s %s: WER %.2f %% (%d utterances)", system, condition, result["wer"], len(records))
    extra = {"details": details}
    if ci:
        extra.update(ci=ci, p_better_than={reference: p_better})
    if jax.process_index() == 0:
        results_lib.update_results(workdir, system, wers, extra)
    return wers


def load_system(workdir: pathlib.Path, name: str):
    """(model, params, norm) of a trained stage under WORKDIR/<name>, read-only.

    The frozen teacher is data: its params are loaded for forward passes only, never
    differentiated or re-saved.
    """
    from tsasr.models import build_model
    from tsasr.train import checkpoint

    directory = pathlib.Path(workdir) / name
    if not (directory / "model.json").exists():
        raise FileNotFoundError(f"{directory}: no trained model (model.json missing); run its stage first")
    fields = json.loads((directory / "model.json").read_text())
    model = build_model(fields)
    norm = json.loads((directory / "norm.json").read_text())
    dim = len(norm["mean"])
    abstract = jax.eval_shape(
        lambda: model.init(
            {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(0)},
            jnp.zeros((1, 12, dim)),
            jnp.zeros((1, 12)),
        )["params"]
    )
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0])),
        abstract,
    )
    params = checkpoint.load_params(str(directory / "checkpoints"), abstract)
    return model, params, norm
