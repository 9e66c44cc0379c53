"""Stage 1: the DNN-HMM spotter's network, trained with frame cross-entropy, and its scores.

A system is (background, front end): `filler_lfbe`, `monophone_lfbe`, `monophone_dft`, ... The
network (frontends.TdbHighway) classifies each frame into silence, the wake word's HMM states
and the background units; it trains on the clean and noisy copies of the training items
(multi-condition) with tsasr.train.loop. `log_posteriors` runs it over any items in fixed-shape
padded batches; `scores` turns them into the detector's per-frame scores (detector.py).
"""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np

from tsasr import workdir as wd
from tsasr.data import batching, padded
from tsasr.recipes.wakeword import detector, frontends
from tsasr.recipes.wakeword import features as feats_lib
from tsasr.train import checkpoint, loop, step
from tsasr.train.config import network_train_config

KEYS = {"features": batching.FRAME, "targets": batching.FRAME}


def parse(system: str) -> tuple[str, str]:
    background, _, front_end = system.partition("_")
    if background not in ("monophone", "filler") or front_end not in frontends.DIMS:
        raise ValueError(f"spotter system {system!r} must be <monophone|filler>_<lfbe|dft>")
    return background, front_end


def num_targets(workdir: pathlib.Path, background: str) -> int:
    units = feats_lib.units(workdir)
    keyword = len(units["keyword"])
    return len(units["targets"]) if background == "monophone" else keyword + 2


def model_for(config, workdir: pathlib.Path, system: str) -> frontends.TdbHighway:
    background, front_end = parse(system)
    return frontends.TdbHighway(frontends.model_config(front_end, num_targets(workdir, background), config.spotter.net))


def train(config, workdir: pathlib.Path, system: str) -> dict:
    background, front_end = parse(system)
    units = feats_lib.units(workdir)
    keyword = len(units["keyword"])
    examples = []
    for condition in ("clean", "noisy"):
        x = feats_lib.load(workdir, "train", condition, front_end)
        y = feats_lib.load_targets(workdir, "train", condition)
        for key in sorted(x):
            examples.append(
                {
                    "id": f"{key}/{condition}",
                    "features": x[key].astype(np.float32),
                    "targets": feats_lib.targets_for(background, y[key], keyword),
                }
            )
    cfg = config.spotter
    batcher = batching.Batcher(
        examples, batching.BatchingConfig(cfg.batch_size, tuple(cfg.buckets), config.seed, keys=KEYS)
    )
    train_cfg = network_train_config(config, cfg)
    train_cfg.feature_dim = frontends.DIMS[front_end]
    model = model_for(config, workdir, system)
    state = loop.train(train_cfg, model, step.make_frame_ce_loss(model, "targets"), batcher, str(workdir / system))
    params = frontends.num_params(model.config)
    wd.write_json(workdir / system / "model.json", {"system": system, "parameters": params, **model.config.__dict__})
    return {"steps": int(state.step), "parameters": params}


def load(config, workdir: pathlib.Path, system: str):
    model = model_for(config, workdir, system)
    dim = model.config.input_dim
    abstract = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), np.zeros((1, 8, dim), np.float32), np.zeros((1, 8), np.float32))[
            "params"
        ]
    )
    return model, checkpoint.load_params(str(workdir / system / "checkpoints"), abstract)


_APPLY = {}


def _apply(model):
    if model.config in _APPLY:
        return _APPLY[model.config]

    @jax.jit
    def fn(params, x, paddings):
        logits, _ = model.apply({"params": params}, x.astype(np.float32), paddings)
        return jax.nn.log_softmax(logits, -1)

    _APPLY[model.config] = fn
    return fn


def log_posteriors(model, params, items: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    fn = _apply(model)
    out = {}
    ordered = dict(sorted(items.items(), key=lambda kv: kv[1].shape[0]))
    for batch, lp in padded.map_padded(lambda x, p: fn(params, x, p), ordered, 8, padded.next_power_of_two_times(512)):
        lp = np.asarray(lp)
        for row, (key, n) in enumerate(zip(batch.ids, batch.lengths)):
            out[key] = lp[row, :n]
    return out


def background_ids(workdir: pathlib.Path, background: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(wake-word state targets, background targets) of a background model."""
    units = feats_lib.units(workdir)
    keyword = tuple(units["keyword"])
    total = num_targets(workdir, background)
    return keyword, tuple(i for i in range(total) if i not in keyword)


def scores(workdir, background, posteriors: dict) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """{id: (scores [frames], backpointers [frames, J], gains [frames, J])} of the detector."""
    keyword, bg = background_ids(workdir, background)
    out = {}
    for key, lp in posteriors.items():
        g = detector.gains(lp, keyword, bg)
        s, back = detector.streaming_scores(g)
        out[key] = (s, back, g)
    return out


def read_model_json(workdir: pathlib.Path, system: str) -> dict:
    return json.loads((workdir / system / "model.json").read_text())
