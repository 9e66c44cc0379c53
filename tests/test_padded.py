"""tsasr.data.padded against a plain loop: order, filler rows, paddings, lengths, dispatch-ahead."""

import numpy as np
import pytest

from tsasr.data import padded


def _items(lengths, trailing=(3,), dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return {f"u{k}": (rng.standard_normal((n,) + trailing) + 1).astype(dtype) for k, n in enumerate(lengths)}


def _plain_loop(items, batch_size, length):
    """The loop padded_batches replaces, written out."""
    keys = list(items)
    out = []
    for start in range(0, len(keys), batch_size):
        ids = keys[start : start + batch_size]
        width = length(max(len(items[k]) for k in ids))
        first = items[ids[0]]
        values = np.zeros((batch_size, width) + first.shape[1:], first.dtype)
        paddings = np.ones((batch_size, width), np.float32)
        for row, k in enumerate(ids):
            values[row, : len(items[k])] = items[k]
            paddings[row, : len(items[k])] = 0.0
        out.append((ids, [len(items[k]) for k in ids], values, paddings))
    return out


@pytest.mark.parametrize("trailing", [(), (3,), (2, 2)])
def test_batches_match_a_plain_loop(trailing):
    items = _items([5, 1, 9, 0, 4, 7, 7], trailing)
    length = padded.round_up(4)
    batches = list(padded.padded_batches(items, 3, length))
    expected = _plain_loop(items, 3, length)
    assert len(batches) == len(expected) == 3
    for batch, (ids, lengths, values, paddings) in zip(batches, expected):
        assert batch.ids == ids and batch.lengths == lengths
        assert batch.values.dtype == values.dtype and batch.values.shape == values.shape
        np.testing.assert_array_equal(batch.values, values)
        assert batch.paddings.dtype == np.float32
        np.testing.assert_array_equal(batch.paddings, paddings)


def test_mapping_order_filler_rows_and_widths():
    items = _items([5, 1, 9, 0, 4])
    order = sorted(items, key=lambda k: len(items[k]))
    sorted_items = {k: items[k] for k in order}
    batches = list(padded.padded_batches(sorted_items, 2, padded.next_power_of_two_times(2)))
    assert [b.ids for b in batches] == [["u3", "u1"], ["u4", "u0"], ["u2"]]  # the mapping's order
    assert [b.lengths for b in batches] == [[0, 1], [4, 5], [9]]
    assert [b.values.shape[:2] for b in batches] == [(2, 2), (2, 8), (2, 16)]
    last = batches[-1]
    assert not last.values[1].any() and (last.paddings[1] == 1.0).all()  # the filler row
    np.testing.assert_array_equal(last.paddings[0], [0.0] * 9 + [1.0] * 7)
    np.testing.assert_array_equal(last.values[0, :9], items["u2"])
    assert not last.values[0, 9:].any()
    assert (batches[0].paddings[0] == 1.0).all()  # an empty item is all padding


def test_length_functions():
    up = padded.round_up(8)
    assert [up(n) for n in (0, 1, 8, 9, 16, 17)] == [8, 8, 8, 16, 16, 24]
    pow2 = padded.next_power_of_two_times(100)
    assert [pow2(n) for n in (0, 1, 100, 101, 200, 201, 800, 801)] == [100, 100, 100, 200, 200, 400, 800, 1600]
    with pytest.raises(ValueError):
        padded.round_up(0)
    with pytest.raises(ValueError, match="shorter than the longest"):
        list(padded.padded_batches(_items([5]), 2, lambda n: n - 1))


def test_map_padded_dispatches_the_next_batch_before_yielding():
    items = _items([3, 6, 2, 8, 5])
    events = []

    def fn(values, paddings):
        events.append(("call", values.shape[1]))
        return values.sum(axis=tuple(range(1, values.ndim))), paddings.sum(axis=1)

    widths = []
    for batch, (sums, pads) in padded.map_padded(fn, items, 2, padded.round_up(4)):
        events.append(("yield", batch.values.shape[1]))
        widths.append(batch.values.shape[1])
        np.testing.assert_allclose(sums[: len(batch.ids)], [items[k].sum() for k in batch.ids], rtol=1e-5)
        np.testing.assert_array_equal(pads, batch.paddings.sum(axis=1))
        assert not sums[len(batch.ids) :].any()
    assert widths == [8, 8, 8]
    # batch i + 1 is dispatched before batch i is handed over; the last one after all calls
    assert [e[0] for e in events] == ["call", "call", "yield", "call", "yield", "yield"]
    assert list(padded.map_padded(fn, {}, 2, padded.round_up(4))) == []
