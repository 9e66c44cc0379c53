"""Benchmark of teacher soft-labelling and student training on soft labels. Prints one JSON object.

- label_overhead: (labelling time) / (bare teacher forward time) - 1, where labelling is
  tsasr.distill.label.label_features (on GPU/TPU the top-k inside the jitted forward and the
  transfer of [frames, k] to the host; on CPU the forward's logits and sort keys, and numpy's
  top-k of the real frames while the next batch runs) and the sharded writes with checksums,
  and the bare forward only computes the logits, over the same padded batches, dispatched one
  ahead as the labeller does. Best of 5 each, alternated.
- bytes_per_frame_k20: soft-label bytes on disk per frame at k = 20.
- student_frames_per_s: training frames per second of the student's jitted step on soft targets.
- online_student_frames_per_s: the same step with the teacher inside it (student.online): the
  teacher's forward pass and top-k on the clean features of the batch replace stored labels.

The teacher and student are the default recipe's TDNN (tsasr/recipes/asr/config.py) with random
weights over random features: speed does not depend on the values.

    python bench/soft_labels.py [--utterances 256] [--senones 800]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tsasr.distill import label as label_lib
from tsasr.distill import soft_labels as sl
from tsasr.models import build_model
from tsasr.recipes.asr import config as asr_config
from tsasr.recipes.asr import objectives
from tsasr.train import step as step_lib


def _features(n: int, rng) -> dict[str, np.ndarray]:
    return {f"utt{i:05d}": rng.standard_normal((int(rng.integers(120, 400)), 64)).astype(np.float32) for i in range(n)}


def _bare_forward(model, params, features, batch=16, bucket=256):
    """A function timing one bare forward pass over `features`: the labeller's batches and padding
    (built beforehand, untimed), each batch dispatched before the previous one is awaited, as the
    labeller does, and nothing done with the logits."""
    forward = jax.jit(lambda p, x, m: model.apply({"params": p}, x, m, train=False)[0])
    ids = sorted(features, key=lambda u: len(features[u]))
    batches = []
    for start in range(0, len(ids), batch):
        chunk = ids[start : start + batch]
        length = -(-max(len(features[u]) for u in chunk) // bucket) * bucket
        x = np.zeros((batch, length, 64), np.float32)
        pad = np.ones((batch, length), np.float32)
        for row, u in enumerate(chunk):
            x[row, : len(features[u])] = features[u]
            pad[row, : len(features[u])] = 0.0
        batches.append((x, pad))
    for x, pad in batches:
        forward(params, x, pad).block_until_ready()  # compile every shape first

    def timed() -> float:
        started, pending = time.perf_counter(), None
        for x, pad in batches:
            result = forward(params, x, pad)
            if pending is not None:
                pending.block_until_ready()
            pending = result
        pending.block_until_ready()
        return time.perf_counter() - started

    return timed


def _label(model, params, features, k: int, directory: pathlib.Path) -> float:
    label_lib.label_features(model, params, dict(list(features.items())[:32]), k)  # compile
    started = time.perf_counter()
    writer = sl.ShardWriter(directory, 0, k, model.config.num_senones)
    for utt, (ids, logits) in label_lib.label_features(model, params, features, k).items():
        writer.add(utt, ids, logits)
    writer.close()
    sl.write_index(directory, k, model.config.num_senones, 1)
    return time.perf_counter() - started


def _student_frames_per_s(model, params, k: int, steps: int = 10, online: bool = False) -> float:
    tx = optax.adam(1e-3)
    from tsasr.train import state as state_lib

    state = state_lib.create(jax.tree.map(jnp.array, params), tx)
    teacher = label_lib.teacher_top_k(model, k) if online else None
    loss_fn = objectives.make_loss_fn(model, 1, jnp.float32, k, 2.0, teacher=teacher)
    train_step = jax.jit(step_lib.make_train_step(loss_fn, tx, lambda step: 1e-3), donate_argnums=0)
    rng = np.random.default_rng(1)
    b, t = 16, 256
    batch = {
        "features": rng.standard_normal((b, t, 64)).astype(np.float32),
        "feature_paddings": np.zeros((b, t), np.float32),
    }
    if online:
        batch["clean_features"] = rng.standard_normal((b, t, 64)).astype(np.float32)
        frozen = (params,)  # the teacher: same architecture, its own (here: the initial) weights
    else:
        batch["soft_ids"] = rng.integers(0, model.config.num_senones, (b, t, k)).astype(np.int32)
        batch["soft_logits"] = -np.sort(rng.standard_normal((b, t, k)), axis=-1).astype(np.float32)
        frozen = ()
    state, m = train_step(state, batch, jax.random.PRNGKey(0), *frozen)
    jax.block_until_ready(m)
    started = time.perf_counter()
    for i in range(steps):
        state, m = train_step(state, batch, jax.random.PRNGKey(i), *frozen)
    jax.block_until_ready(m)
    return steps * b * t / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--utterances", type=int, default=256)
    parser.add_argument("--senones", type=int, default=800)
    args = parser.parse_args()
    fields = {**asr_config.ce_config().model.to_dict(), "num_senones": args.senones}
    model = build_model(fields)
    params = model.init(
        {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(0)}, jnp.zeros((1, 12, 64)), jnp.zeros((1, 12))
    )["params"]
    features = _features(args.utterances, np.random.default_rng(0))
    frames = sum(len(f) for f in features.values())
    with tempfile.TemporaryDirectory() as tmp:
        bare_pass, bare, labelled = _bare_forward(model, params, features), [], []
        for i in range(5):  # alternated, so a change in the machine's load falls on both alike
            bare.append(bare_pass())
            labelled.append(_label(model, params, features, 40, pathlib.Path(tmp) / f"k40_{i}"))
        bare, labelled = min(bare), min(labelled)
        _label(model, params, features, 20, pathlib.Path(tmp) / "k20")
        size = (pathlib.Path(tmp) / "k20" / "shard-00000.bin").stat().st_size
    print(
        json.dumps(
            {
                "label_overhead": round(labelled / bare - 1, 3),
                "bytes_per_frame_k20": round(size / frames, 2),
                "student_frames_per_s": round(_student_frames_per_s(model, params, 20), 1),
                "online_student_frames_per_s": round(_student_frames_per_s(model, params, 20, online=True), 1),
                "teacher_forward_frames_per_s": round(frames / bare, 1),
                "labelling_frames_per_s_k40": round(frames / labelled, 1),
                "frames": frames,
                "senones": args.senones,
                "model": fields,
                "backend": jax.default_backend(),
                "targets": {"label_overhead": 0.15, "bytes_per_frame_k20": 84},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
