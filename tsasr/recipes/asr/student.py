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
- input: 'memory' (every feature in host memory) or 'stream': with stored noise, each noisy
  training utterance's int16 audio and its clean original's targets (soft labels at top_k, or
  with an online teacher its LFBE in the teacher's normalisation, `clean_features`; `senones`
  with hard labels) are written once as ArrayRecord shards in WORKDIR/records/<stage>/ and read
  by tsasr.data.loader, LFBE computed in the step (teacher.streamed_records; host memory
  O(batch)). The records' index names what they were made from (`CleanTargets.source`): records of
  other labels, top_k, noisy data or alignments are written again, never reused. The held-out
  utterances stay in memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import pathlib

import numpy as np

from tsasr.audio import io as audio_io
from tsasr.audio import lfbe as lfbe_lib
from tsasr.data import fingerprint
from tsasr.data import layout
from tsasr.data import records as records_lib
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
    return [
        {
            "id": r["id"],
            "features": features[r["id"]],
            "clean_features": clean_twin(r, len(features[r["id"]]), clean_features),
        }
        for r in records
    ]


def clean_twin(record: dict, frames: int, clean_features: dict) -> np.ndarray:
    """The features of a noisy utterance's clean original; SoftLabelError unless they have its `frames`."""
    clean_id = record.get("clean_id", record["id"])
    if clean_id not in clean_features:
        raise sl.SoftLabelError(f"utterance {record['id']!r}: its clean original {clean_id!r} is not in {CLEAN_SPLITS}")
    clean = clean_features[clean_id]
    if len(clean) != frames:
        raise sl.SoftLabelError(
            f"utterance {record['id']!r}: {frames} frames, but its clean original {clean_id!r} "
            f"has {len(clean)}: not parallel data"
        )
    return clean


def add_hard_labels(examples: list[dict], records: list[dict], alignments) -> int:
    """Gives every example `senones` (hard_senones). Returns the number of utterances with an alignment."""
    for example, r in zip(examples, records):
        example["senones"] = hard_senones(r, len(example["features"]), alignments)
    return sum(r.get("clean_id", r["id"]) in alignments.files for r in records)


def hard_senones(record: dict, frames: int, alignments) -> np.ndarray:
    """The clean original's alignment where it has one, else -1 per frame (no hard target)."""
    clean_id = record.get("clean_id", record["id"])
    if clean_id not in alignments.files:
        return np.full(frames, -1, np.int32)
    senones = np.asarray(alignments[clean_id], np.int32)
    if len(senones) != frames:
        raise ValueError(
            f"utterance {record['id']!r}: the alignment of {clean_id!r} has {len(senones)} frames, "
            f"the features {frames}"
        )
    return senones


def run(config, workdir: pathlib.Path, name: str = "student_ce", teacher: str = "", labels: str = "labels") -> dict:
    """Training stage `student_ce` (or Table 2's second student, `name`, on `teacher`'s `labels`)."""
    cfg = config.student
    if cfg.noisify not in NOISIFY:
        raise ValueError(f"student.noisify={cfg.noisify!r}, expected one of {NOISIFY}")
    if cfg.noisify == "onthefly" and not cfg.online:
        raise ValueError("student.noisify='onthefly' needs student.online=True: fresh mixes have no stored labels")
    if cfg.input not in teacher_stage.INPUTS:
        raise ValueError(f"student.input={cfg.input!r}, expected one of {teacher_stage.INPUTS}")
    teacher_name = teacher or cfg.teacher
    workdir = pathlib.Path(workdir)
    if cfg.noisify == "onthefly":
        from tsasr.recipes.asr import onthefly  # its module imports this one's helpers

        return onthefly.run(config, cfg, workdir, name, teacher_name)
    if cfg.input == "stream":
        return run_streamed(config, cfg, workdir, name, teacher_name, labels)
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


def run_streamed(config, cfg, workdir: pathlib.Path, name: str, teacher_name: str, labels: str) -> dict:
    """The stored-noise student with student.input='stream': its training utterances streamed
    from WORKDIR/records/<name>/ (written here unless complete and of the same source), the
    held-out ones in memory."""
    records = [r for split in SPLITS for r in acoustic.read(workdir, split)]
    train = [r for r in records if not teacher_stage.heldout(r.get("clean_id", r["id"]), cfg.heldout_percent)]
    held = [r for r in records if teacher_stage.heldout(r.get("clean_id", r["id"]), cfg.heldout_percent)]
    frozen, teacher = None, None
    if cfg.online:
        teacher_model, frozen, teacher_norm = acoustic.load_system(workdir, teacher_name)
        num_senones, top_k, teacher = online_teacher(cfg, teacher_model)
        clean = {r["id"]: r for split in CLEAN_SPLITS for r in acoustic.read(workdir, split)}
        origin = {"clean": clean, "teacher_norm": teacher_norm}
    else:
        reader = sl.SoftLabelReader(workdir / labels)
        num_senones = reader.num_senones
        top_k = cfg.top_k or num_senones  # 0 = every senone (dense targets)
        sl.validate_k_temperature(top_k, cfg.temperature, reader.k)
        origin = {"reader": reader}
    alignments = hard_alignments(workdir, cfg, num_senones) if cfg.hard_weight else None
    targets = CleanTargets(top_k, alignments=alignments, **origin)
    directory = workdir / "records" / name
    write = lambda: teacher_stage.write_normalised_records(  # noqa: E731
        directory, lambda: targets.examples(train), len(train), cfg, targets.source(workdir, cfg)
    )
    stream, norm = teacher_stage.streamed_records(config, cfg, name, directory, write)
    features = acoustic.normalise(acoustic.compute_features(held, f"{name}: held-out features"), norm) if held else {}
    if cfg.online:
        heldout_examples = online_examples(held, features, targets.twin_features(held))
    else:  # a reader of their own: the label pages it maps are unmapped once their labels are copied out
        heldout_examples = soft_examples(held, features, sl.SoftLabelReader(workdir / labels), top_k, cfg.temperature)
    summary_extra = {"input": "stream"}
    if alignments is not None:
        add_hard_labels(heldout_examples, held, alignments)
        labelled = sum(r.get("clean_id", r["id"]) in alignments.files for r in train)
        summary_extra["hard_labelled_utterances"] = labelled
        log_hard_labels(name, cfg, labelled, len(train))
    # fit's default on_device, teacher.on_audio_or_features: LFBE of the records' audio in the
    # step, the targets (soft labels, or the online teacher's clean_features) as they are.
    data = teacher_stage.TrainingSet([], heldout_examples, norm, num_senones, stream=stream)
    return train_student(config, cfg, workdir, name, data, top_k, teacher, frozen, teacher_name, summary_extra)


@dataclasses.dataclass(frozen=True)
class CleanTargets:
    """What a streamed noisy utterance is written with, from its clean original: its stored soft
    labels (`reader`) at `top_k`, or for an online teacher (`clean`: the clean records by id) its
    LFBE in the teacher's normalisation `teacher_norm`; with hard labels its `alignments`."""

    top_k: int
    reader: sl.SoftLabelReader | None = None
    clean: dict[str, dict] | None = None
    teacher_norm: dict | None = None
    alignments: object | None = None  # align/senones.npz

    def source(self, workdir: pathlib.Path, cfg) -> dict:
        """What the records are made from (records_lib.write_split_once's `source`): the noisy
        data, the held-out share, the labels' content (their shards' sha256) at top_k, or the clean
        data and the teacher's normalisation, and the alignments. Directories enter by the stat of
        their files (tsasr.data.fingerprint, relative paths: a moved workdir keeps its records).
        Not the temperature: targets are derived from the stored logits in the step."""
        source = {"noisy": fingerprint.directory(workdir / layout.NOISY), "heldout_percent": int(cfg.heldout_percent)}
        if self.reader is not None:
            source.update(labels=_digest(self.reader.index["shards"]), top_k=int(self.top_k))
        else:
            source.update(clean=fingerprint.directory(workdir / layout.CORPUS), teacher_norm=_digest(self.teacher_norm))
        if self.alignments is not None:
            source["alignments"] = fingerprint.directory(workdir / "align")
        return source

    def twin_features(self, records: list[dict]) -> dict[str, np.ndarray]:
        """The clean originals' normalised LFBE of `records`, by clean id (clean_twin names a missing one)."""
        twins = sorted({r.get("clean_id", r["id"]) for r in records} & self.clean.keys())
        if not twins:
            return {}
        features = acoustic.compute_features([self.clean[u] for u in twins], "clean features")
        return acoustic.normalise(features, self.teacher_norm)

    def examples(self, train: list[dict], chunk: int = 64):
        """records_lib.write_split's examples, one noisy training utterance at a time: its audio and
        its clean original's `soft_ids` int32 / `soft_logits` float16 [frames, top_k] (the stored
        float16 logits, exactly), or `clean_features` float32 [frames, dim] (computed `chunk`
        utterances at a time); `senones` with hard labels. Frames are the noisy audio's.
        The labels are read through a reader of this pass's own, whose memory-mapped shards are
        unmapped when the pass ends: the pass touches every page of them (the labels' size, 55 MB
        per hour of training data), which `self.reader`, alive through training, would keep resident."""
        reader = None if self.reader is None else sl.SoftLabelReader(self.reader.directory)
        for start in range(0, len(train), chunk):
            part = train[start : start + chunk]
            clean_features = self.twin_features(part) if self.clean is not None else {}
            for r in part:
                audio = audio_io.read_audio(r["audio"])
                frames = lfbe_lib.num_frames(len(audio))
                example = {"id": r["id"], records_lib.AUDIO: audio}
                if reader is None:
                    example["clean_features"] = clean_twin(r, frames, clean_features)
                else:
                    ids, logits = reader.raw(r.get("clean_id", r["id"]), expected_frames=frames)
                    example["soft_ids"] = ids[:, : self.top_k]
                    example["soft_logits"] = logits[:, : self.top_k].astype(np.float16)  # as stored: exact
                if self.alignments is not None:
                    example["senones"] = hard_senones(r, frames, self.alignments)
                yield example


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


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
