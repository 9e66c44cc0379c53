"""Soft labelling: a frozen teacher's top-k senones and logits per frame.

The teacher's logits are computed and reduced to the top-k senones: on GPU/TPU inside the
same jitted forward pass (jax.lax.top_k), so only [frames, k] leaves the device; on CPU by
numpy, from sort keys the forward also returns, to the same bits (label_features). The
asr recipe's `label` stage stores them with tsasr.distill.soft_labels; online distillation
traces teacher_top_k inside the student's step.
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np

from tsasr.data import padded

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


def _id_bits(num_senones: int) -> int:
    return max(num_senones - 1, 1).bit_length()


def _total_order(bits):
    """int32 float bits -> int32 in IEEE total order of those floats (-NaN < -inf < -0 < +0 < +inf <
    +NaN, as jax.lax.top_k orders them on CPU). Its own inverse."""
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


@functools.cache
def _top_k_forward(model, k: int, on_device: bool):
    if on_device:
        return jax.jit(teacher_top_k(model, k))

    def forward(params, features, paddings):
        """(logits, keys) [batch, frames, senones]. A key orders a frame's senones by logit, then by
        lower id: its high bits are the logit's in total order, its low _id_bits the senone. One
        elementwise pass after the output layer (~3% of the forward's time, for writing the keys)."""
        logits, _ = model.apply({"params": params}, features, paddings, train=False)
        logits = logits.astype(jnp.float32)
        low = (1 << _id_bits(logits.shape[-1])) - 1
        order = _total_order(jax.lax.bitcast_convert_type(logits, jnp.int32))
        return logits, (order & ~low) | (low - jnp.arange(logits.shape[-1], dtype=jnp.int32))

    return jax.jit(forward)


def _sorted_top_k(values: np.ndarray, ids: np.ndarray, k: int, id_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids int32, values float32) [n, k]: the k highest of rows [n, m] (value, then lower id), sorted.

    One int64 key per entry, (descending value order) << id_bits | id: a single ascending numpy sort.
    """
    descending = 0x7FFFFFFF - _total_order(values.view(np.int32)).astype(np.int64)  # in [0, 2**32)
    keys = np.sort((descending << id_bits) | ids, axis=-1)[:, :k]
    top_ids = (keys & ((1 << id_bits) - 1)).astype(np.int32)
    return top_ids, _total_order((0x7FFFFFFF - (keys >> id_bits)).astype(np.int32)).view(np.float32)


def _top_k_rows(logits: np.ndarray, rows: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids int32, values float32) [len(rows), k] of logits[rows] [frames, senones] float32, highest
    first, equal logits by lower id: exactly jax.lax.top_k's.

    keys [len(rows), senones] (the CPU forward's, see _top_k_forward) are overwritten. They carry
    the senone in their low bits, so numpy's int32 partition (AVX-512: ~1.4 us a frame at 800
    senones, against 4-6 us for argpartition) selects ids and logits together. Their high bits
    decide the top k unless the k-th and (k+1)-th keys share them (~0.4% of a trained teacher's
    frames at 800 senones), and they order it unless two of the k share them (~10%, k = 40);
    those frames are redone from their full logits, or re-sorted on their k logits read in full
    precision.
    """
    senones = logits.shape[1]
    id_bits = _id_bits(senones)
    all_ids = np.broadcast_to(np.arange(senones), (len(rows), senones))
    if k >= senones:
        return _sorted_top_k(logits[rows], all_ids, k, id_bits)
    low = (1 << id_bits) - 1
    keys.partition(senones - k - 1, axis=1)
    top = np.sort(keys[:, senones - k - 1 :], axis=1)[:, ::-1]  # the top k descending, then the (k+1)-th
    ids = low - (top[:, :k] & low)
    values = np.take(logits.reshape(-1), ids + rows[:, None] * senones)  # np.take: ~40% faster than [ ]
    high = top >> id_bits
    tied = high[:, 1:] == high[:, :-1]  # neighbours whose order the high bits do not decide
    redo = tied[:, k - 1]  # the k-th place is not decided by the high bits
    resort = np.flatnonzero(tied[:, : k - 1].any(axis=1) & ~redo)
    if len(resort):  # tied neighbours are in ascending id already: a stable sort by full logit
        order = np.argsort(~_total_order(values[resort].view(np.int32)), axis=1, kind="stable")
        ids[resort] = np.take_along_axis(ids[resort], order, axis=1)
        values[resort] = np.take_along_axis(values[resort], order, axis=1)
    redo = np.flatnonzero(redo)
    if len(redo):
        ids[redo], values[redo] = _sorted_top_k(logits[rows[redo]], all_ids[redo], k, id_bits)
    return ids, values


def host_top_k(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids int32, logits float32) [..., k] of logits [..., senones], as the CPU labeller selects
    them: exactly jax.lax.top_k(logits, k), with its ids and values swapped."""
    logits = np.ascontiguousarray(logits, np.float32)
    flat = logits.reshape(-1, logits.shape[-1])
    low = (1 << _id_bits(flat.shape[1])) - 1
    keys = (_total_order(flat.view(np.int32)) & ~low) | (low - np.arange(flat.shape[1], dtype=np.int32))
    ids, values = _top_k_rows(flat, np.arange(len(flat)), keys, k)
    shape = logits.shape[:-1] + (min(k, logits.shape[-1]),)
    return ids.reshape(shape), values.reshape(shape)


def label_features(model, params, features: dict[str, np.ndarray], k: int, batch: int = 16, bucket: int = 256):
    """{utt: (ids [frames, k] int32, logits [frames, k] float32)} from the teacher, padded batches.

    On GPU/TPU the top-k runs inside the jitted forward, so only [frames, k] leaves the device.
    On CPU the device is the host, and XLA's TopK sorts every row on one thread (measured 37 us a
    frame at 800 senones, as long as the teacher's forward pass), so the forward returns the logits
    and their sort keys, and numpy selects the top k of the real frames only (_top_k_rows, ~2.5 us
    a frame at 800 senones and k = 40) while the next batch's forward pass runs. Both give
    jax.lax.top_k's result: logit descending, equal logits by lower id.
    """
    on_device = jax.default_backend() != "cpu"
    forward = _top_k_forward(model, k, on_device)
    ids_sorted = sorted(features, key=lambda u: len(features[u]))
    out = {}
    scratch = np.empty((0, 0), np.int32)  # reused: fresh pages for every batch cost more than the copy

    def collect(chunk, result):
        nonlocal scratch
        lengths = [len(features[u]) for u in chunk]
        if on_device:
            top_ids, top_logits = jax.device_get(result)
            for row, (u, n) in enumerate(zip(chunk, lengths)):
                out[u] = (top_ids[row, :n], top_logits[row, :n])
            return
        logits, keys = (np.asarray(a) for a in result)  # no copies on CPU, read-only
        length, senones = logits.shape[1:]
        if scratch.shape[0] < sum(lengths) or scratch.shape[1] != senones:
            scratch = np.empty((batch * length, senones), np.int32)
        start = 0
        for row, n in enumerate(lengths):  # only the real frames of each row, not the padding
            scratch[start : start + n] = keys[row, :n]
            start += n
        rows = np.concatenate([np.arange(n) + row * length for row, n in enumerate(lengths)])
        top_ids, top_logits = _top_k_rows(logits.reshape(-1, senones), rows, scratch[:start], k)
        start = 0
        for u, n in zip(chunk, lengths):
            out[u] = (top_ids[start : start + n], top_logits[start : start + n])
            start += n

    ordered = {u: features[u] for u in ids_sorted}
    forward_with = functools.partial(forward, params)
    for padded_batch, result in padded.map_padded(forward_with, ordered, batch, padded.round_up(bucket)):
        collect(padded_batch.ids, result)  # the next batch's forward pass is already dispatched
    return out
