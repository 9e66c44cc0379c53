"""Sort, pad to a batch, run jitted, unpad: variable-length items through a fixed-shape function.

A jitted function compiles once per input shape, so items of many lengths go through it
in batches of a fixed number of rows, each padded to a length from a short list
(`round_up`, `next_power_of_two_times`). The caller chooses the order of the items
(usually sorted by length, so a batch wastes little padding) and cuts each row of the
result back to its item's length:

    order = np.argsort([len(x) for x in xs])
    items = {int(i): xs[i] for i in order}
    for batch, out in map_padded(jitted_fn, items, 16, next_power_of_two_times(32000)):
        out = np.asarray(out)
        for row, (key, n) in enumerate(zip(batch.ids, batch.lengths)):
            results[key] = out[row, :n]

Knows nothing of JAX: `fn` may be any function of (values, paddings).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Hashable, Iterator, Mapping

import numpy as np


@dataclasses.dataclass(frozen=True)
class PaddedBatch:
    """One batch: rows 0..len(ids)-1 are the items, the rest filler."""

    ids: list  # the keys of the real rows, in row order
    lengths: list[int]  # their lengths (first axis)
    values: np.ndarray  # [batch_size, length, ...] the items zero-padded; filler rows all zero
    paddings: np.ndarray  # [batch_size, length] float32, 1.0 = pad


def padded_batches(
    items: Mapping[Hashable, np.ndarray], batch_size: int, length: Callable[[int], int]
) -> Iterator[PaddedBatch]:
    """Batches of `items` IN THE MAPPING'S ORDER (callers sort), batch_size rows each (the
    last filled with padding rows), padded to length(longest item of the batch).

    Values keep the items' dtype (their common one, np.result_type); every item of a
    batch must have the same trailing shape.
    """
    if batch_size < 1:
        raise ValueError(f"padded_batches: batch_size must be >= 1, got {batch_size}")
    keys = list(items)
    for start in range(0, len(keys), batch_size):
        ids = keys[start : start + batch_size]
        arrays = [np.asarray(items[k]) for k in ids]
        lengths = [int(a.shape[0]) for a in arrays]
        width = length(max(lengths))
        if width < max(lengths):
            raise ValueError(f"padded_batches: length({max(lengths)}) = {width} is shorter than the longest item")
        values = np.zeros((batch_size, width) + arrays[0].shape[1:], np.result_type(*arrays))
        paddings = np.ones((batch_size, width), np.float32)
        for row, (a, n) in enumerate(zip(arrays, lengths)):
            values[row, :n] = a
            paddings[row, :n] = 0.0
        yield PaddedBatch(ids=ids, lengths=lengths, values=values, paddings=paddings)


def map_padded(
    fn: Callable[[np.ndarray, np.ndarray], Any],
    items: Mapping[Hashable, np.ndarray],
    batch_size: int,
    length: Callable[[int], int],
) -> Iterator[tuple[PaddedBatch, Any]]:
    """Yields (batch, fn(batch.values, batch.paddings)) with batch i+1 dispatched before
    batch i is yielded (fn is typically jitted, so the device works on the next batch while
    the caller unpads this one); results are not fetched to host here."""
    pending = None
    for batch in padded_batches(items, batch_size, length):
        result = fn(batch.values, batch.paddings)
        if pending is not None:
            yield pending
        pending = (batch, result)
    if pending is not None:
        yield pending


def round_up(multiple: int) -> Callable[[int], int]:
    """length -> the smallest multiple of `multiple` that is >= length (and >= multiple)."""
    if multiple < 1:
        raise ValueError(f"round_up: multiple must be >= 1, got {multiple}")

    def fn(n: int) -> int:
        return max(1, -(-int(n) // multiple)) * multiple

    return fn


def next_power_of_two_times(bucket: int) -> Callable[[int], int]:
    """length -> bucket * 2**j, the smallest such that is >= length (j >= 0)."""
    if bucket < 1:
        raise ValueError(f"next_power_of_two_times: bucket must be >= 1, got {bucket}")

    def fn(n: int) -> int:
        width = bucket
        while width < n:
            width *= 2
        return width

    return fn
