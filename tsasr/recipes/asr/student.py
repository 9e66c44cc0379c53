"""Training stage `student_ce`: the student learns the teacher's soft labels on noisy audio.

Parallel data: each noisy utterance (noisy/train_labelled + noisy/train_unlabelled) is
paired with the soft labels of its clean original (`clean_id`), frame for frame; a noisy
copy whose frame count differs from its labels is an error naming it. The loss is the
top-k soft-target cross-entropy, -sum_{s in top-k} p_teacher(s) log softmax(student)(s),
with p_teacher = softmax(logits[:k] / T) derived from the stored logits inside the
training step (tsasr.losses.soft_ce), so a k x T sweep reuses one labelling pass.

Options (config.student):
- hard_weight w > 0: on the labelled utterances' frames the target becomes
  (1 - w) * teacher + w * one-hot(alignment of the clean original); unlabelled frames
  keep the teacher's targets (tsasr.recipes.asr.objectives.make_loss_fn).
- online: no stored labels; the frozen teacher runs inside the student's jitted step on
  the clean features of the same batch (its params are a step argument, never trained),
  for when storing labels costs more than recomputing them. The targets are those of
  the offline path computed from the teacher's float32 logits, where the stored labels
  keep them in float16.
- noisify: 'stored' (the noisify stage's one noisy copy per utterance) or 'onthefly' (needs
  online): a fresh mix of every clean utterance each epoch, made on the device inside the step
  (tsasr.recipes.asr.onthefly).
"""

from __future__ import annotations

import json
import logging
import pathlib

import numpy as np

from tsasr.data import layout
from tsasr.distill import label as label_lib
from tsasr.distill import soft_labels as sl
from tsasr.recipes.asr import acoustic
from tsasr.recipes.asr import teacher as teacher_stage

SPLITS = tuple(layout.noisy(s) for s in layout.TRAIN_SPLITS)
CLEAN_SPLITS = tuple(layout.clean(s) for s in layout.TRAIN_SPLITS)
NOISIFY = ("stored", "onthefly")  # student.noisify
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


def online_examples(records: list[dict], features: dict, clean_features: dict) -> list[dict]:
    """Examples with the clean original's (teacher-normalised) features as `clean_features`."""
    examples = []
    for r in records:
        clean_id = r.get("clean_id", r["id"])
        if clean_id not in clean_features:
            raise sl.SoftLabelError(f"utterance {r['id']!r}: its clean original {clean_id!r} is not in {CLEAN_SPLITS}")
        clean = clean_features[clean_id]
        if len(clean) != len(features[r["id"]]):
            raise sl.SoftLabelError(
                f"utterance {r['id']!r}: {len(features[r['id']])} frames, but its clean original {clean_id!r} "
                f"has {len(clean)}: not parallel data"
            )
        examples.append({"id": r["id"], "features": features[r["id"]], "clean_features": clean})
    return examples


def add_hard_labels(examples: list[dict], records: list[dict], alignments) -> int:
    """Gives every example `senones`: the clean original's alignment where it has one, else
    -1 per frame (no hard target). Returns the number of utterances with an alignment."""
    labelled = 0
    for example, r in zip(examples, records):
        clean_id = r.get("clean_id", r["id"])
        frames = len(example["features"])
        if clean_id in alignments.files:
            senones = np.asarray(alignments[clean_id], np.int32)
            if len(senones) != frames:
                raise ValueError(
                    f"utterance {r['id']!r}: the alignment of {clean_id!r} has {len(senones)} frames, "
                    f"the features {frames}"
                )
            labelled += 1
        else:
            senones = np.full(frames, -1, np.int32)
        example["senones"] = senones
    return labelled


def run(config, workdir: pathlib.Path, name: str = "student_ce", teacher: str = "", labels: str = "labels") -> dict:
    """Training stage `student_ce` (or Table 2's second student, `name`, on `teacher`'s `labels`)."""
    cfg = config.student
    if cfg.noisify not in NOISIFY:
        raise ValueError(f"student.noisify={cfg.noisify!r}, expected one of {NOISIFY}")
    if cfg.noisify == "onthefly" and not cfg.online:
        raise ValueError("student.noisify='onthefly' needs student.online=True: fresh mixes have no stored labels")
    if cfg.input not in teacher_stage.INPUTS:
        raise ValueError(f"student.input={cfg.input!r}, expected one of {teacher_stage.INPUTS}")
    if cfg.input == "stream" and cfg.noisify != "onthefly":
        raise ValueError(
            "student.input='stream' needs student.noisify='onthefly': stored noisy copies train from memory"
        )
    teacher_name = teacher or cfg.teacher
    workdir = pathlib.Path(workdir)
    if cfg.noisify == "onthefly":
        from tsasr.recipes.asr import onthefly  # its module imports this one's helpers

        return onthefly.run(config, cfg, workdir, name, teacher_name)
    records = [r for split in SPLITS for r in acoustic.read(workdir, split)]
    features = acoustic.compute_features(records, f"{name}: noisy features")
    train = [r for r in records if not teacher_stage.heldout(r.get("clean_id", r["id"]), cfg.heldout_percent)]
    held = [r for r in records if teacher_stage.heldout(r.get("clean_id", r["id"]), cfg.heldout_percent)]
    norm = acoustic.normalisation({r["id"]: features[r["id"]] for r in train}, cfg.utterance_mean)
    features = acoustic.normalise(features, norm)
    frozen, teacher = None, None
    if cfg.online:
        teacher_model, frozen, teacher_norm = acoustic.load_system(workdir, teacher_name)
        num_senones, top_k, teacher = online_teacher(cfg, teacher_model)
        clean_records = [r for split in CLEAN_SPLITS for r in acoustic.read(workdir, split)]
        clean = acoustic.normalise(acoustic.compute_features(clean_records, f"{name}: clean features"), teacher_norm)
        examples, heldout_examples = online_examples(train, features, clean), online_examples(held, features, clean)
    else:
        reader = sl.SoftLabelReader(workdir / labels)
        num_senones = reader.num_senones
        top_k = cfg.top_k or num_senones  # 0 = every senone (dense targets)
        examples = soft_examples(train, features, reader, top_k, cfg.temperature)
        heldout_examples = soft_examples(held, features, reader, top_k, cfg.temperature)
    summary_extra = {}
    if cfg.hard_weight:
        alignments = hard_alignments(workdir, cfg, num_senones)
        summary_extra["hard_labelled_utterances"] = add_hard_labels(examples, train, alignments)
        add_hard_labels(heldout_examples, held, alignments)
        log_hard_labels(name, cfg, summary_extra["hard_labelled_utterances"], len(examples))
    data = teacher_stage.TrainingSet(examples, heldout_examples, norm, num_senones)
    return train_student(config, cfg, workdir, name, data, top_k, teacher, frozen, teacher_name, summary_extra)


def online_teacher(cfg, teacher_model):
    """(num_senones, top_k, teacher) of the online teacher: its top-k inside the step."""
    num_senones = teacher_model.config.num_senones
    top_k = cfg.top_k or num_senones
    sl.validate_k_temperature(top_k, cfg.temperature, num_senones)
    return num_senones, top_k, label_lib.teacher_top_k(teacher_model, top_k)


def hard_alignments(workdir: pathlib.Path, cfg, num_senones: int):
    if not 0.0 < cfg.hard_weight <= 1.0:
        raise ValueError(f"student.hard_weight={cfg.hard_weight!r} must be in [0, 1]")
    alignments = np.load(workdir / "align" / "senones.npz")
    aligned = json.loads((workdir / "align" / "summary.json").read_text())["num_senones"]
    if aligned != num_senones:
        raise ValueError(f"the alignments have {aligned} senones, the teacher {num_senones}")
    return alignments


def log_hard_labels(name: str, cfg, labelled: int, total: int) -> None:
    log.info("%s: hard labels (weight %g) on %d of %d training utterances", name, cfg.hard_weight, labelled, total)


def train_student(config, cfg, workdir, name, data, top_k, teacher, frozen, teacher_name, summary_extra) -> dict:
    """teacher.fit with the student's soft-target loss; the stage's summary."""

    def make_loss(model, train_cfg):
        return teacher_stage.frame_loss(
            model,
            train_cfg,
            soft_top_k=top_k,
            soft_temperature=cfg.temperature,
            hard_weight=float(cfg.hard_weight),
            teacher=teacher,
        )

    summary = teacher_stage.fit(config, cfg, workdir, name, data, make_loss=make_loss, frozen=frozen)
    summary.update(
        top_k=top_k,
        temperature=cfg.temperature,
        teacher=teacher_name,
        online=bool(cfg.online),
        hard_weight=float(cfg.hard_weight),
        **summary_extra,
    )
    return summary
