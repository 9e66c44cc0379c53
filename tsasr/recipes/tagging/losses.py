"""The tagging objectives, each a pure function (tested against float64 numpy in tests/test_tagging.py).

Notation: z [b, C] clip logits, y [b, C] multi-hot targets, sigma the logistic sigmoid,
T the KD temperature; A [b, frames, dim] a distillation layer's activations (tagging/models.py).

    total = w_bce * BCE + w_kd * KD + beta_sp * SP + beta_iusp * IUSP     (weights in config.student)

`make_loss` gives the trainer's `(loss, metrics, weight)` contract; the teacher's params arrive
as `frozen` (never trained or saved), and per-member weights (w_kd, beta_sp, beta_iusp) come from
the batch, so the methods of one student size train together along the loop's members axis.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

EPS = 1e-8  # row-norm floor of the Gram matrices (an all-zero row stays zero)


def bce(logits, targets):
    """BCE = -1/(b C) sum_{i,c} [y_ic log sigma(z_ic) + (1 - y_ic) log(1 - sigma(z_ic))] (targets may be soft)."""
    return jnp.mean(targets * -jax.nn.log_sigmoid(logits) + (1.0 - targets) * -jax.nn.log_sigmoid(-logits))


def kd(student_logits, teacher_logits, temperature):
    """KD = BCE(sigma(z_s / T), p_t) with p_t = sigma(z_t / T): the teacher's tempered per-class
    probabilities as soft targets of the student's tempered sigmoid (multi-label, so a sigmoid per
    class, not a softmax; no T^2 factor, as in the public SP reimplementation's BCE on soft targets)."""
    targets = jax.lax.stop_gradient(jax.nn.sigmoid(teacher_logits / temperature))
    return bce(student_logits / temperature, targets)


def _row_normalised_gram(a):
    """G = A A^T with every row divided by its L2 norm, for A [..., n, d] -> [..., n, n]."""
    gram = jnp.einsum("...nd,...md->...nm", a, a)
    return gram / jnp.maximum(jnp.linalg.norm(gram, axis=-1, keepdims=True), EPS)


def sp(student_layer, teacher_layer):
    """SP-KD (Tung & Mori 2019): F = the layer flattened per clip [b, frames*dim]; G = F F^T with
    rows L2-normalised [b, b]; SP = ||G_t - G_s||_F^2 / b^2."""
    b = student_layer.shape[0]
    gs = _row_normalised_gram(student_layer.reshape(b, -1))
    gt = _row_normalised_gram(jax.lax.stop_gradient(teacher_layer).reshape(b, -1))
    return jnp.sum((gt - gs) ** 2) / b**2


def resize_matrix(source: int, target: int) -> np.ndarray:
    """R [target, source]: linear interpolation from `source` frames to `target` frames (frame
    centres aligned: target frame j sits at source position (j + 0.5) source/target - 0.5, clamped);
    identity when they are equal. G [source, source] resized is R G R^T."""
    if source == target:
        return np.eye(source, dtype=np.float32)
    positions = np.clip((np.arange(target) + 0.5) * source / target - 0.5, 0, source - 1)
    return np.stack([np.interp(positions, np.arange(source), row) for row in np.eye(source)], axis=1).astype(np.float32)


def iusp(student_layer, teacher_layer):
    """IUSP (Chang et al. 2020): per clip, A [frames, dim]; G = A A^T row-normalised [frames, frames];
    the student's G, when its frame count differs, is resized to the teacher's (R G R^T with
    `resize_matrix`, linear interpolation) and row-normalised again; IUSP = mean over clips of
    ||G_t - G_s||_F^2 / frames_t^2. Padded frames are zero rows in A, hence zero rows in both G."""
    frames_t, frames_s = teacher_layer.shape[1], student_layer.shape[1]
    gt = _row_normalised_gram(jax.lax.stop_gradient(teacher_layer))
    gs = _row_normalised_gram(student_layer)
    if frames_s != frames_t:
        r = jnp.asarray(resize_matrix(frames_s, frames_t))
        gs = jnp.einsum("ts,bsu,vu->btv", r, gs, r)
        gs = gs / jnp.maximum(jnp.linalg.norm(gs, axis=-1, keepdims=True), EPS)
    return jnp.mean(jnp.sum((gt - gs) ** 2, axis=(1, 2)) / frames_t**2)


def make_loss(student, teacher=None, *, bce_weight: float = 1.0, temperature: float = 2.0):
    """loss_fn(params, batch, rng, train[, frozen]) -> (total, {bce, kd, sp, iusp}, clips).

    batch: features, feature_paddings, labels [b, C] (multi-hot); with a teacher also the
    per-member scalars w_kd, w_sp, w_iusp. Without a teacher (the teacher's own training) the
    loss is bce_weight * BCE. Every term is always computed and reported; the weights select.
    """

    def loss_fn(params, batch, rng, train=True, frozen=None):
        outputs, _ = student.apply(
            {"params": params}, batch["features"], batch["feature_paddings"], train=train, rngs={"dropout": rng}
        )
        labels = batch["labels"].astype(jnp.float32)
        clips = jnp.asarray(labels.shape[0], jnp.float32)
        loss_bce = bce(outputs["logits"], labels)
        if teacher is None or frozen is None:
            return bce_weight * loss_bce, {"bce": loss_bce}, clips
        target, _ = teacher.apply({"params": frozen}, batch["features"], batch["feature_paddings"], train=False)
        target = jax.lax.stop_gradient(target)
        terms = {
            "bce": loss_bce,
            "kd": kd(outputs["logits"], target["logits"], temperature),
            "sp": sp(outputs["layer"], target["layer"]),
            "iusp": iusp(outputs["layer"], target["layer"]),
        }
        total = (
            bce_weight * terms["bce"]
            + batch["w_kd"] * terms["kd"]
            + batch["w_sp"] * terms["sp"]
            + batch["w_iusp"] * terms["iusp"]
        )
        return total, terms, clips

    return loss_fn
