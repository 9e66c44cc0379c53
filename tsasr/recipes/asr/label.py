"""Stage `label`: the frozen teacher soft-labels the clean training audio.

For every utterance of train_labelled and train_unlabelled (clean), the teacher's top-k
senones and logits (tsasr.distill.label) are stored by tsasr.distill.soft_labels at
k = student.label_top_k, the largest k any student of the experiment uses; every smaller k
and any temperature are derived when read. Shards are labelled one at a time and written
atomically: a killed run redoes only unfinished shards, and with several processes,
process p labels the shards i with i % processes == p (tsasr.pipeline.share); process 0
writes the index once every shard is written.
"""

from __future__ import annotations

import logging
import pathlib
import time

from tsasr import pipeline
from tsasr.data import layout
from tsasr.distill import soft_labels as sl
from tsasr.distill.label import label_features
from tsasr.recipes.asr import acoustic

SPLITS = tuple(layout.clean(s) for s in layout.TRAIN_SPLITS)
log = logging.getLogger(__name__)


def run(config, workdir: pathlib.Path, teacher: str = "", labels: str = "labels") -> dict:
    """Stage `label`: `teacher` (default student.teacher) labels the clean training data into
    WORKDIR/`labels` (Table 2's second student has its own stage, `label_<teacher>`)."""
    cfg = config.student
    teacher = teacher or cfg.teacher
    workdir = pathlib.Path(workdir)
    out = workdir / labels
    if cfg.online:
        return {"skipped": "student.online: the teacher labels inside the student's training step"}
    model, params, norm = acoustic.load_system(workdir, teacher)
    num_senones = model.config.num_senones
    k = cfg.label_top_k or num_senones  # 0 = every senone: dense targets, the k = S baseline
    if not isinstance(k, int) or not 1 <= k <= num_senones:
        raise ValueError(
            f"student.label_top_k={k!r} must be an integer in [1, {num_senones}] (the senone count), "
            "or 0 for all senones"
        )
    records = [r for split in SPLITS for r in acoustic.read(workdir, split)]
    shards: dict[int, list[dict]] = {}
    for r in records:
        shards.setdefault(sl.shard_of(r["id"], cfg.label_shards), []).append(r)
    started, frames, done_before = time.perf_counter(), 0, 0
    mine = pipeline.share(cfg.label_shards)
    for index in mine:
        if sl.shard_done(out, index):
            done_before += 1
            continue
        members = shards.get(index, [])
        writer = sl.ShardWriter(out, index, k, num_senones)
        if members:
            features = acoustic.normalise(acoustic.compute_features(members, f"label: shard {index}"), norm)
            for utt, (ids, logits) in label_features(model, params, features, k).items():
                writer.add(utt, ids, logits)
                frames += len(ids)
        writer.close()
    if done_before:
        log.info("label: %d shards were already done (resumed)", done_before)
    process, processes = pipeline.processes()
    if processes > 1:
        log.info(
            "%s: process %d of %d labelled %d of %d shards", labels, process, processes, len(mine), cfg.label_shards
        )
    pipeline.barrier("label: every shard written")
    if process != 0:  # process 0 writes the index; the stage's barrier holds the others until it has
        return {"teacher": teacher, "k": k, "shards": len(mine)}
    index = sl.write_index(out, k, num_senones, cfg.label_shards, {"teacher": teacher})
    size = sum((out / f"{sl.shard_name(i)}.bin").stat().st_size for i in range(cfg.label_shards))
    total_frames = sum(v["frames"] for v in index["shards"].values())
    return {
        "teacher": teacher,
        "k": k,
        "utterances": len(index["utterances"]),
        "frames": total_frames,
        "bytes_per_frame": round(size / max(total_frames, 1), 2),
        "seconds": round(time.perf_counter() - started, 1),
    }
