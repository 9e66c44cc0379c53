"""Runner stage `student_ce`: the student learns the teacher's soft labels on noisy audio.

Parallel data: each noisy utterance (noisy/train_labelled + noisy/train_unlabelled) is
paired with the soft labels of its clean original (`clean_id`), frame for frame; a noisy
copy whose frame count differs from its labels is an error naming it. The loss is the
top-k soft-target cross-entropy, -sum_{s in top-k} p_teacher(s) log softmax(student)(s),
with p_teacher = softmax(logits[:k] / T) derived from the stored logits inside the
training step (tsasr.losses.soft_ce), so a k x T sweep reuses one labelling pass.
"""

from __future__ import annotations

import logging
import pathlib

from tsasr.distill import soft_labels as sl
from tsasr.train import acoustic
from tsasr.train import teacher as trainer

SPLITS = ("noisy/train_labelled.jsonl", "noisy/train_unlabelled.jsonl")
log = logging.getLogger(__name__)


def soft_examples(records: list[dict], features: dict, reader: sl.SoftLabelReader, top_k: int, temperature: float):
    """Examples with `soft_ids` and `soft_logits` [frames, top_k] from the clean originals' labels."""
    sl.validate_k_temperature(top_k, temperature, reader.k)
    examples = []
    for r in records:
        clean_id = r.get("clean_id", r["id"])
        ids, logits = reader.raw(clean_id, expected_frames=len(features[r["id"]]))
        examples.append(
            {"id": r["id"], "features": features[r["id"]], "soft_ids": ids[:, :top_k], "soft_logits": logits[:, :top_k]}
        )
    return examples


def run(config, workdir: pathlib.Path) -> dict:
    """Runner stage `student_ce`."""
    cfg = config.student
    workdir = pathlib.Path(workdir)
    reader = sl.SoftLabelReader(workdir / "labels")
    records = [r for split in SPLITS for r in acoustic.read(workdir, split)]
    features = acoustic.compute_features(records, "student_ce: noisy features")
    train = [r for r in records if not trainer.heldout(r.get("clean_id", r["id"]), cfg.heldout_percent)]
    norm = acoustic.normalisation({r["id"]: features[r["id"]] for r in train})
    features = acoustic.normalise(features, norm)
    held = [r for r in records if trainer.heldout(r.get("clean_id", r["id"]), cfg.heldout_percent)]
    top_k = cfg.top_k or reader.num_senones  # 0 = every senone (dense targets)
    examples = soft_examples(train, features, reader, top_k, cfg.temperature)
    heldout_examples = soft_examples(held, features, reader, top_k, cfg.temperature)
    summary = trainer.fit(
        config,
        cfg,
        workdir,
        "student_ce",
        examples,
        heldout_examples,
        reader.num_senones,
        norm,
        soft_top_k=top_k,
        temperature=cfg.temperature,
        reference=cfg.teacher,
    )
    summary.update(top_k=top_k, temperature=cfg.temperature, teacher=cfg.teacher)
    return summary
