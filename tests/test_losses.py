"""Losses against plain numpy float64 references."""

import numpy as np
import pytest

from tsasr import losses


def log_softmax64(x):
    x = np.asarray(x, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def random_case(seed, batch=3, frames=7, senones=11):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (batch, frames, senones)).astype(np.float32)
    paddings = np.zeros((batch, frames), np.float32)
    paddings[1, 4:] = 1.0
    paddings[2, 1:] = 1.0
    return rng, logits, paddings


def test_frame_cross_entropy_matches_numpy():
    rng, logits, paddings = random_case(0)
    senones = rng.integers(0, 11, paddings.shape)
    senones[paddings > 0] = 999  # Out-of-range ids on pads must be ignored.
    loss, accuracy, frames = losses.frame_cross_entropy(logits, senones, paddings)
    mask = paddings < 0.5
    log_probs = log_softmax64(logits)
    picked = np.take_along_axis(log_probs, np.where(mask, senones, 0)[..., None], -1)[..., 0]
    np.testing.assert_allclose(loss, -picked[mask].mean(), rtol=1e-5)
    np.testing.assert_allclose(accuracy, (logits.argmax(-1) == senones)[mask].mean(), rtol=1e-6)
    assert frames == mask.sum()


@pytest.mark.parametrize("top_k,temperature", [(None, 1.0), (3, 2.0), (1, 0.5)])
def test_soft_cross_entropy_matches_numpy(top_k, temperature):
    rng, logits, paddings = random_case(1)
    k = 5
    ids = np.stack([rng.permutation(11)[:k] for _ in range(3 * 7)]).reshape(3, 7, k)
    teacher = -np.sort(-rng.normal(0, 2, (3, 7, k)), axis=-1).astype(np.float16)
    probs = losses.soft_targets(teacher, top_k, temperature)
    kept = k if top_k is None else top_k
    scaled = teacher[..., :kept].astype(np.float64) / temperature
    expected_probs = np.exp(log_softmax64(scaled))
    np.testing.assert_allclose(probs, expected_probs, rtol=1e-5, atol=1e-7)

    loss, accuracy, frames = losses.soft_cross_entropy(logits, ids[..., :kept], probs, paddings)
    mask = paddings < 0.5
    picked = np.take_along_axis(log_softmax64(logits), ids[..., :kept], -1)
    per_frame = -(expected_probs * picked).sum(-1)
    np.testing.assert_allclose(loss, per_frame[mask].mean(), rtol=1e-5)
    np.testing.assert_allclose(accuracy, (logits.argmax(-1) == ids[..., 0])[mask].mean(), rtol=1e-6)
    assert frames == mask.sum()


def test_soft_targets_reject_bad_k_and_temperature():
    teacher = np.zeros((1, 2, 4), np.float32)
    with pytest.raises(ValueError, match="top_k=5"):
        losses.soft_targets(teacher, 5)
    with pytest.raises(ValueError, match="temperature"):
        losses.soft_targets(teacher, 2, 0.0)
