"""Runner stage `teacher_ce`: frame-level cross-entropy training of the teacher on the
labelled clean alignments, its held-out frame accuracy, and its WER per test condition.

Read top to bottom: features -> normalisation -> examples -> train -> evaluate -> decode.
`train_frame_ce` is the recipe; the multi-condition baseline calls it on noisy data.
"""

from __future__ import annotations

import json
import logging
import pathlib
import zlib

import jax
import ml_collections
import numpy as np

from tsasr import workdir as wd
from tsasr.data import batching
from tsasr.models import build_model
from tsasr.train import acoustic
from tsasr.train import loop

log = logging.getLogger(__name__)


def heldout(utt_id: str, percent: int) -> bool:
    """A fixed, hash-based share of utterances kept out of training."""
    return zlib.crc32(utt_id.encode()) % 100 < percent


def fit(
    config,
    cfg,
    workdir: pathlib.Path,
    name: str,
    examples: list[dict],
    heldout_examples: list[dict],
    num_senones: int,
    norm: dict,
    *,
    soft_top_k: int = 0,
    temperature: float = 1.0,
    reference: str | None = None,
    make_loss=None,
    frozen=None,
) -> dict:
    """Trains `cfg.model` on examples (senones or soft targets), evaluates the held-out ones,
    decodes every test condition; returns a summary. Writes WORKDIR/<name>/.

    make_loss(model, train_cfg) -> loss_fn replaces the objective the batches imply
    (tsasr.train.step.make_loss_fn); `frozen` params reach it in every step (an online teacher).
    """
    out = pathlib.Path(workdir) / name
    model_fields = {**cfg.model.to_dict(), "num_senones": num_senones}
    model = build_model(model_fields)
    wd.write_json(out / "model.json", model_fields)
    wd.write_json(out / "norm.json", norm)
    train_cfg = ml_collections.ConfigDict(cfg.train.to_dict())
    train_cfg.seed = int(config.seed)
    train_cfg.feature_dim = int(examples[0]["features"].shape[1])
    train_cfg.soft_top_k, train_cfg.soft_temperature = int(soft_top_k), float(temperature)
    batching_cfg = dict(
        batch_size=cfg.batch_size, bucket_boundaries=tuple(cfg.bucket_boundaries), seed=int(config.seed)
    )
    batcher = batching.Batcher(
        examples, batching.BatchingConfig(**batching_cfg), jax.process_index(), jax.process_count()
    )
    loss_fn = make_loss(model, train_cfg) if make_loss else None
    state = loop.train(train_cfg, model, batcher, str(out), loss_fn=loss_fn, frozen=frozen)
    summary = {
        "utterances": len(examples),
        "frames": int(sum(len(e["features"]) for e in examples)),
        "num_senones": num_senones,
        "steps": int(train_cfg.num_steps),
        "epochs": round(train_cfg.num_steps / batcher.batches_per_epoch, 2),
    }
    if heldout_examples:
        evaluation = loop.evaluate(
            train_cfg,
            model,
            state.params,
            batching.Batcher(heldout_examples, batching.BatchingConfig(**batching_cfg, drop_remainder=False)).epoch(),
            loss_fn=loss_fn,
            frozen=frozen,
        )
        summary["heldout_frame_accuracy"] = round(evaluation["frame_accuracy"], 4)
        summary["heldout_loss"] = round(evaluation["loss"], 4)
    summary["wer"] = acoustic.decode_conditions(workdir, name, model, state.params, norm, config, reference=reference)
    return summary


def train_frame_ce(config, cfg, workdir: pathlib.Path, name: str, records: list[dict], reference: str = "gmm") -> dict:
    """Frame cross-entropy against the alignments of `records` (by `clean_id` for noisy copies)."""
    workdir = pathlib.Path(workdir)
    alignments = np.load(workdir / "align" / "senones.npz")
    num_senones = int(json.loads((workdir / "align" / "summary.json").read_text())["num_senones"])
    aligned = [r for r in records if r.get("clean_id", r["id"]) in alignments.files]
    if len(aligned) < len(records):
        log.info(
            "%s: %d of %d utterances have no alignment (excluded by the align stage), skipped",
            name,
            len(records) - len(aligned),
            len(records),
        )
    features = acoustic.compute_features(aligned, f"{name}: features")
    train_ids = [r["id"] for r in aligned if not heldout(r["id"], cfg.heldout_percent)]
    norm = acoustic.normalisation({u: features[u] for u in train_ids})
    features = acoustic.normalise(features, norm)
    examples = {False: [], True: []}
    for r in aligned:
        examples[heldout(r["id"], cfg.heldout_percent)].append(
            {"id": r["id"], "features": features[r["id"]], "senones": alignments[r.get("clean_id", r["id"])]}
        )
    return fit(config, cfg, workdir, name, examples[False], examples[True], num_senones, norm, reference=reference)


def run_multicondition(config, workdir: pathlib.Path) -> dict:
    """Runner stage `multicondition_ce`: the teacher's recipe on the noisy labelled data
    (clean alignments), the fair comparison without distillation. Off unless
    baselines.multicondition is set."""
    if not config.baselines.multicondition:
        return {"skipped": "baselines.multicondition is false"}
    records = acoustic.read(workdir, "noisy/train_labelled.jsonl")
    return train_frame_ce(config, config.teacher, workdir, "multicondition_ce", records, reference="teacher_ce")


def run(config, workdir: pathlib.Path) -> dict:
    """Runner stage `teacher_ce`."""
    records = acoustic.read(workdir, "corpus/train_labelled.jsonl")
    return train_frame_ce(config, config.teacher, workdir, "teacher_ce", records)
