"""Runner stage `label`: the frozen teacher soft-labels the clean training audio.

For every utterance of train_labelled and train_unlabelled (clean), the teacher's logits
are computed and reduced to the top-k senones inside the same jitted forward pass
(jax.lax.top_k), so only [frames, k] leaves the device. Stored by tsasr.distill.soft_labels
at k = student.label_top_k, the largest k any student of the experiment uses; every
smaller k and any temperature are derived when read. Shards are labelled one at a time
and written atomically: a killed run redoes only unfinished shards, and with several
processes, process p labels the shards i with i % processes == p.
"""

from __future__ import annotations

import functools
import logging
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from tsasr.distill import soft_labels as sl
from tsasr.train import acoustic

SPLITS = ("corpus/train_labelled.jsonl", "corpus/train_unlabelled.jsonl")
log = logging.getLogger(__name__)


def teacher_top_k(model, k: int):
    """teacher(params, features, paddings) -> (ids, logits) [batch, frames, k], highest first.

    The labelling function itself, unjitted: the label stage jits it alone; online
    distillation (tsasr.distill.student) traces it inside the student's training step.
    """
    if model.config.subsampling != 1:
        raise ValueError(
            f"the teacher has frame subsampling {model.config.subsampling}; soft labels are per input "
            "frame, so the teacher must have subsampling 1"
        )

    def teacher(params, features, paddings):
        logits, _ = model.apply({"params": params}, features, paddings, train=False)
        # top_k on [frames, senones] rows: inside a training step XLA's CPU backend lowers a
        # 3-D top_k to a full sort (measured 2.2x slower step) and a 2-D one to its TopK kernel.
        rows = logits.astype(jnp.float32).reshape(-1, logits.shape[-1])
        top_logits, top_ids = jax.lax.top_k(rows, k)  # sorted, highest first
        shape = logits.shape[:-1] + (k,)
        return top_ids.reshape(shape), top_logits.reshape(shape)

    return teacher


@functools.cache
def _top_k_forward(model, k: int, on_device: bool):
    if on_device:
        return jax.jit(teacher_top_k(model, k))

    def forward(params, features, paddings):
        logits, _ = model.apply({"params": params}, features, paddings, train=False)
        return logits.astype(jnp.float32)

    return jax.jit(forward)


def host_top_k(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, logits) [..., k] sorted highest first, by argpartition: O(senones) per frame."""
    part = np.argpartition(-logits, k - 1, axis=-1)[..., :k] if k < logits.shape[-1] else np.argsort(-logits, axis=-1)
    values = np.take_along_axis(logits, part, axis=-1)
    order = np.argsort(-values, axis=-1, kind="stable")
    return np.take_along_axis(part, order, axis=-1), np.take_along_axis(values, order, axis=-1)


def label_features(model, params, features: dict[str, np.ndarray], k: int, batch: int = 16, bucket: int = 256):
    """{utt: (ids [frames, k], logits [frames, k])} from the teacher, padded batches.

    On GPU/TPU the top-k runs inside the jitted forward, so only [frames, k] leaves the
    device. On CPU the device is the host and XLA's TopK sorts every row (measured 37 us a
    frame at 800 senones, as long as the teacher's forward pass), so the logits are taken
    as they are and numpy's argpartition selects the top k of each real frame, while the
    next batch's forward pass runs (label_overhead 0.50 -> 0.22 in bench/soft_labels.py).
    """
    on_device = jax.default_backend() != "cpu"
    forward = _top_k_forward(model, k, on_device)
    ids_sorted = sorted(features, key=lambda u: len(features[u]))
    out = {}

    def collect(chunk, result):
        if on_device:
            top_ids, top_logits = jax.device_get(result)
            for row, u in enumerate(chunk):
                out[u] = (top_ids[row, : len(features[u])], top_logits[row, : len(features[u])])
        else:  # only the real frames of each row, not the padding
            logits = np.asarray(result)
            for row, u in enumerate(chunk):
                out[u] = host_top_k(logits[row, : len(features[u])], k)

    pending = None
    for start in range(0, len(ids_sorted), batch):
        chunk = ids_sorted[start : start + batch]
        length = -(-max(len(features[u]) for u in chunk) // bucket) * bucket
        x = np.zeros((batch, length, features[chunk[0]].shape[1]), np.float32)
        pad = np.ones((batch, length), np.float32)
        for row, u in enumerate(chunk):
            x[row, : len(features[u])] = features[u]
            pad[row, : len(features[u])] = 0.0
        result = forward(params, x, pad)  # dispatched; runs while the previous batch is collected
        if pending is not None:
            collect(*pending)
        pending = (chunk, result)
    if pending is not None:
        collect(*pending)
    return out


def run(config, workdir: pathlib.Path) -> dict:
    """Runner stage `label`."""
    cfg = config.student
    workdir = pathlib.Path(workdir)
    out = workdir / "labels"
    if cfg.online:
        return {"skipped": "student.online: the teacher labels inside the student's training step"}
    model, params, norm = acoustic.load_system(workdir, cfg.teacher)
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
    for index in range(cfg.label_shards):
        if index % jax.process_count() != jax.process_index():
            continue
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
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("label: every shard written")
    index = sl.write_index(out, k, num_senones, cfg.label_shards, {"teacher": cfg.teacher})
    size = sum((out / f"{sl.shard_name(i)}.bin").stat().st_size for i in range(cfg.label_shards))
    total_frames = sum(v["frames"] for v in index["shards"].values())
    return {
        "teacher": cfg.teacher,
        "k": k,
        "utterances": len(index["utterances"]),
        "frames": total_frames,
        "bytes_per_frame": round(size / max(total_frames, 1), 2),
        "seconds": round(time.perf_counter() - started, 1),
    }
