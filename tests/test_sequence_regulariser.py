"""LF-MMI regularised towards the CE model it starts from (sequence.kld_regularize): the
regulariser and its gradient against float64 numpy; the stage's step loss is LF-MMI plus the
weight times it, with the CE model's params handed to the loop frozen; at 0 no frozen model is
run and every sequence stage keeps the key it had before the field existed.

Reuses the session's tiny run up to teacher_ce and copies only what teacher_seq reads."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_asr, tiny_config

from tsasr import pipeline
from tsasr.recipe import load as load_recipe
from tsasr.recipes.asr import acoustic
from tsasr.recipes.asr import sequence

ASR = load_recipe("asr")
SEQUENCE_STAGES = ("teacher_seq", "student_seq", "multicondition_seq")


class Stopped(Exception):
    pass


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _cross_entropy_float64(logits, init_logits, paddings):
    """Mean over real frames of -sum_s softmax(init)(s) log softmax(logits)(s), and its gradient."""
    mask = 1.0 - np.asarray(paddings, np.float64)
    targets = np.exp(_log_softmax(init_logits))
    per_frame = -np.sum(targets * _log_softmax(logits), axis=-1)
    frames = mask.sum()
    gradient = (np.exp(_log_softmax(logits)) - targets) * mask[..., None] / frames
    return float(np.sum(per_frame * mask) / frames), gradient


def test_the_regulariser_and_its_gradient_are_the_cross_entropy_to_the_init_posteriors():
    rng = np.random.default_rng(0)
    logits, init_logits = rng.normal(size=(2, 2, 7, 11)).astype(np.float32) * 3
    paddings = np.zeros((2, 7), np.float32)
    paddings[1, 4:] = 1.0  # padded frames count for nothing
    value, gradient = _cross_entropy_float64(logits, init_logits, paddings)
    got, got_gradient = jax.value_and_grad(sequence.kl_regularizer)(
        jnp.asarray(logits), jnp.asarray(init_logits), jnp.asarray(paddings)
    )
    assert float(got) == pytest.approx(value, rel=1e-5)
    np.testing.assert_allclose(np.asarray(got_gradient), gradient, atol=1e-6)
    assert np.all(np.asarray(got_gradient)[1, 4:] == 0.0)
    # At the init model itself the value is the entropy of its posteriors and the gradient vanishes.
    entropy, zero = _cross_entropy_float64(init_logits, init_logits, paddings)
    same = jax.grad(sequence.kl_regularizer)(jnp.asarray(init_logits), jnp.asarray(init_logits), jnp.asarray(paddings))
    assert float(sequence.kl_regularizer(init_logits, init_logits, paddings)) == pytest.approx(entropy, rel=1e-5)
    np.testing.assert_allclose(np.asarray(same), zero, atol=1e-6)


@pytest.fixture(scope="module")
def teacher(tiny_run, tmp_path_factory):
    """A workdir with all teacher_seq reads, copied from the tiny run after its teacher_ce."""
    shared, config = tiny_run
    run_asr(config, shared, until="teacher_ce")  # the shared run's stages (test_recipe.py reuses them)
    workdir = tmp_path_factory.mktemp("teacher_seq") / "run"
    for part in ("corpus", "align", "teacher_ce"):
        shutil.copytree(shared / part, workdir / part)
    return workdir


def _captured(workdir, weight):
    """(loss_fn, first training batch, frozen params) that teacher_seq hands the loop at `weight`."""
    got = {}

    def capture(train_cfg, model, loss_fn, batches_fn, directory, **kwargs):
        got.update(loss_fn=loss_fn, batch=next(iter(batches_fn(0))), frozen=kwargs.get("frozen"))
        raise Stopped

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sequence.loop, "train", capture)
        with pytest.raises(Stopped):
            sequence.run_teacher(tiny_config(**{"sequence.kld_regularize": weight}), workdir)
    return got["loss_fn"], got["batch"], got["frozen"]


def test_the_step_loss_adds_the_weighted_regulariser_towards_the_frozen_ce_model(teacher):
    weight = 0.25
    regularised, batch, frozen = _captured(teacher, weight)
    alone, _, none = _captured(teacher, 0.0)
    assert none is None  # LF-MMI alone runs no second forward pass
    model, init_params, _ = acoustic.load_system(teacher, "teacher_ce")
    jax.tree_util.tree_map(np.testing.assert_array_equal, frozen, init_params)  # the CE model, as the loop starts
    batch.pop("ids")
    rng = jax.random.PRNGKey(0)
    # Trained params away from the CE model's, so the term is not the init's entropy alone.
    params = jax.tree_util.tree_map(lambda p: p * 1.05, init_params)
    total, metrics, _ = regularised(params, batch, rng, train=False, frozen=frozen)
    lfmmi, _, _ = alone(params, batch, rng, train=False)
    assert float(metrics["lfmmi_loss"]) == pytest.approx(float(lfmmi), rel=1e-6)
    logits, paddings = model.apply({"params": params}, batch["features"], batch["feature_paddings"], train=False)
    init_logits, _ = model.apply({"params": init_params}, batch["features"], batch["feature_paddings"], train=False)
    reference, _ = _cross_entropy_float64(logits, init_logits, paddings)
    assert float(metrics["kl_loss"]) == pytest.approx(reference, rel=1e-4)
    assert float(total) == pytest.approx(float(lfmmi) + weight * reference, rel=1e-4)


def test_at_zero_every_sequence_stage_keeps_its_key():
    def keys(**overrides):
        config = tiny_config(**overrides)
        with config.unlocked():
            config.baselines.multicondition = True
        return config, pipeline.stage_keys(config, ASR.stages(config))

    config, at_zero = keys(**{"sequence.kld_regularize": 0.0})
    with config.unlocked():
        del config.sequence["kld_regularize"]  # the section as it was before the field
    before = pipeline.stage_keys(config, ASR.stages(config))
    _, on = keys(**{"sequence.kld_regularize": 0.1})
    for stage in SEQUENCE_STAGES:
        assert at_zero[stage] == before[stage] != on[stage], stage
    assert at_zero["teacher_ce"] == on["teacher_ce"]
