"""The student's objectives beside plain soft targets: online distillation (the teacher inside
the jitted step) against stored labels, and hard-label mixing against a numpy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tsasr.data import batching
from tsasr.distill import label as label_lib
from tsasr.distill import soft_labels as sl
from tsasr.models import build_model
from tsasr.train import sharding
from tsasr.train import state as state_lib
from tsasr.recipes.asr import acoustic, objectives, student
from tsasr.train import step as step_lib

SENONES, K, T = 120, 20, 2.0
MODEL = {"name": "tdnn", "hidden": 32, "num_layers": 2, "input_context": (2, 2), "dilations": (0, 1), "subsampling": 1}


def _init(seed):
    model = build_model({**MODEL, "num_senones": SENONES})
    key = jax.random.PRNGKey(seed)
    params = model.init({"params": key, "dropout": key}, jnp.zeros((1, 12, 16)), jnp.zeros((1, 12)))["params"]
    return model, params


@pytest.fixture(scope="module")
def parallel():
    """Teacher and student (different random weights), noisy and clean features of 4 utterances."""
    rng = np.random.default_rng(0)
    lengths = (37, 50, 23, 44)
    clean = {f"u{i}": rng.standard_normal((n, 16)).astype(np.float32) for i, n in enumerate(lengths)}
    noisy = {u: f + 0.5 * rng.standard_normal(f.shape).astype(np.float32) for u, f in clean.items()}
    return _init(1), _init(2), clean, noisy


def _batch(examples):
    batch = batching.collate(examples, 64, keys=acoustic.BATCH_KEYS)
    batch.pop("ids")
    return batch


def _offline_batch(teacher, clean, noisy, store=None):
    model, params = teacher
    labels = label_lib.label_features(model, params, clean, K)
    if store is not None:  # through the shard files: logits kept in float16
        writer = sl.ShardWriter(store, 0, K, SENONES)
        for u, (ids, logits) in labels.items():
            writer.add(u, ids, logits)
        writer.close()
        sl.write_index(store, K, SENONES, 1)
        reader = sl.SoftLabelReader(store)
        labels = {u: reader.raw(u, expected_frames=len(clean[u])) for u in clean}
    return _batch(
        [{"id": u, "features": noisy[u], "soft_ids": labels[u][0], "soft_logits": labels[u][1]} for u in noisy]
    )


def _online_batch(clean, noisy):
    return _batch([{"id": u, "features": noisy[u], "clean_features": clean[u]} for u in noisy])


def _online_loss_fn(student_model, teacher_model, **kwargs):
    return objectives.make_loss_fn(
        student_model, 1, jnp.float32, K, T, teacher=label_lib.teacher_top_k(teacher_model, K), **kwargs
    )


def aux(loss_fn):
    """(loss, metrics, weight) -> (loss, (metrics, weight)), for jax.value_and_grad(has_aux=True)."""

    def wrapped(*args, **kwargs):
        loss, metrics, weight = loss_fn(*args, **kwargs)
        return loss, (metrics, weight)

    return wrapped


def test_online_teacher_gives_the_offline_loss_and_gradient(parallel, tmp_path):
    teacher, (student_model, student_params), clean, noisy = parallel
    offline_fn = objectives.make_loss_fn(student_model, 1, jnp.float32, K, T)
    online_fn = _online_loss_fn(student_model, teacher[0])
    rng = jax.random.PRNGKey(0)
    offline_batch, online_batch = _offline_batch(teacher, clean, noisy), _online_batch(clean, noisy)

    (off, (off_metrics, off_frames)), off_grad = jax.value_and_grad(aux(offline_fn), has_aux=True)(
        student_params, offline_batch, rng
    )
    online = jax.jit(jax.value_and_grad(aux(lambda p, b, f: online_fn(p, b, rng, frozen=f)), has_aux=True))
    (on, (on_metrics, on_frames)), on_grad = online(student_params, online_batch, teacher[1])
    assert float(off_frames) == float(on_frames) == sum(len(f) for f in clean.values())
    np.testing.assert_allclose(float(on), float(off), rtol=1e-6)
    assert float(on_metrics["frame_accuracy"]) == float(off_metrics["frame_accuracy"])
    for a, b in zip(jax.tree.leaves(on_grad), jax.tree.leaves(off_grad)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)

    # Stored labels keep float16 logits: the same loss to float16's precision.
    (stored, _), _ = jax.value_and_grad(aux(offline_fn), has_aux=True)(
        student_params, _offline_batch(teacher, clean, noisy, tmp_path), rng
    )
    np.testing.assert_allclose(float(stored), float(on), rtol=2e-3)
    # The teacher matters: another teacher's targets give another loss.
    (other, _), _ = online(student_params, online_batch, student_params)
    assert abs(float(other) - float(on)) > 1e-2


def test_online_step_trains_the_student_and_leaves_the_teacher_alone(parallel):
    teacher, (student_model, student_params), clean, noisy = parallel
    tx = optax.adam(3e-3)
    step = step_lib.jit_train_step(
        step_lib.make_train_step(_online_loss_fn(student_model, teacher[0]), tx, lambda s: 3e-3),
        sharding.data_mesh(),
        with_frozen=True,
    )
    frozen = sharding.replicate(teacher[1], sharding.data_mesh())
    before = jax.tree.map(np.asarray, frozen)
    state = state_lib.create(jax.tree.map(jnp.array, student_params), tx)  # the step donates its state
    batch = _online_batch(clean, noisy)
    losses = []
    for _ in range(30):
        state, measurements = step(state, batch, jax.random.PRNGKey(0), frozen)
        losses.append(float(measurements["loss"]))
    # Soft CE cannot fall below the targets' entropy (about log 20 at T = 2): below a
    # uniform student's log(S) means it learnt the teacher's distribution.
    assert losses[-1] < min(losses[0] - 0.5, np.log(SENONES))
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(frozen)):
        assert np.array_equal(a, np.asarray(b))


def _reference_mixed_loss(logits, ids, teacher_logits, senones, mask, weight):
    """numpy float64: per real frame, (1 - w) soft CE + w hard CE where senones >= 0, else soft CE."""
    logits = logits.astype(np.float64)
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    scaled = teacher_logits[..., :K].astype(np.float64) / T
    p = np.exp(scaled - scaled.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    soft = -(p * np.take_along_axis(log_probs, ids[..., :K], -1)).sum(-1)
    hard = -np.take_along_axis(log_probs, np.maximum(senones, 0)[..., None], -1)[..., 0]
    per_frame = np.where(senones >= 0, (1 - weight) * soft + weight * hard, soft)
    return (per_frame * mask).sum() / mask.sum()


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_hard_label_mixing_matches_numpy(parallel, weight):
    teacher, (student_model, student_params), clean, noisy = parallel
    batch = _offline_batch(teacher, clean, noisy)
    rng = np.random.default_rng(5)
    senones = rng.integers(0, SENONES, batch["feature_paddings"].shape).astype(np.int32)
    senones[1] = -1  # an unlabelled utterance
    senones[2, 10:] = -1
    batch["senones"] = senones
    loss_fn = objectives.make_loss_fn(student_model, 1, jnp.float32, K, T, hard_weight=weight)
    loss, _, _ = loss_fn(student_params, batch, jax.random.PRNGKey(0), train=False)
    logits, _ = student_model.apply({"params": student_params}, batch["features"], batch["feature_paddings"])
    expected = _reference_mixed_loss(
        np.asarray(logits),
        batch["soft_ids"],
        batch["soft_logits"],
        senones,
        1.0 - batch["feature_paddings"],
        weight,
    )
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    if weight:
        # The alignments count: other alignments give another loss.
        batch["senones"] = np.where(senones >= 0, (senones + 1) % SENONES, -1).astype(np.int32)
        moved, _, _ = loss_fn(student_params, batch, jax.random.PRNGKey(0), train=False)
        assert abs(float(moved) - float(loss)) > 1e-3


def test_online_examples_must_be_parallel():
    records = [{"id": "n1", "clean_id": "c1"}, {"id": "n2", "clean_id": "c2"}]
    features = {"n1": np.zeros((10, 4)), "n2": np.zeros((12, 4))}
    with pytest.raises(sl.SoftLabelError, match="'n2'.*12 frames.*'c2' has 11"):
        student.online_examples(records, features, {"c1": np.zeros((10, 4)), "c2": np.zeros((11, 4))})
    with pytest.raises(sl.SoftLabelError, match="'n2'.*'c2' is not"):
        student.online_examples(records, features, {"c1": np.zeros((10, 4))})
