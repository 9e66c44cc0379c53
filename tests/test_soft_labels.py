import numpy as np
import pytest

from tsasr.distill import soft_labels as sl


def _teacher(rng, frames, senones):
    return rng.normal(scale=3.0, size=(frames, senones))


def _topk(logits, k):
    order = np.argsort(-logits, axis=-1)[:, :k]
    return order, np.take_along_axis(logits, order, axis=-1)


def _write(directory, utterances, k, senones, num_shards=3):
    writers = {i: sl.ShardWriter(directory, i, k, senones) for i in range(num_shards)}
    for utt_id, logits in utterances.items():
        ids, top = _topk(logits, k)
        writers[sl.shard_of(utt_id, num_shards)].add(utt_id, ids, top)
    for w in writers.values():
        w.close()
    return sl.write_index(directory, k, senones, num_shards)


@pytest.fixture
def stored(tmp_path):
    rng = np.random.default_rng(0)
    utterances = {f"spk{i}-utt{i}": _teacher(rng, int(rng.integers(20, 60)), 300) for i in range(12)}
    _write(tmp_path, utterances, 40, 300)
    return tmp_path, utterances


@pytest.mark.parametrize("k,temperature", [(1, 1.0), (5, 1.0), (20, 2.0), (40, 3.0), (20, 0.5)])
def test_targets_match_numpy_reference_from_full_logits(stored, k, temperature):
    directory, utterances = stored
    reader = sl.SoftLabelReader(directory)
    for utt_id, full in utterances.items():
        ids, probs = reader.targets(utt_id, k, temperature)
        # reference: float64 top-k of the full logits at temperature T, renormalised over the kept ids
        ref_ids, ref_top = _topk(full, k)
        z = ref_top / temperature
        ref = np.exp(z - z.max(axis=1, keepdims=True))
        ref /= ref.sum(axis=1, keepdims=True)
        assert np.array_equal(ids, ref_ids)
        # float16 logits on disk: relative error 2^-11, so |dl| <= 0.005 at |l| ~ 10, amplified by 1/T
        np.testing.assert_allclose(probs, ref, atol=5e-3)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_hard_and_dense_baselines(tmp_path):
    rng = np.random.default_rng(1)
    full = _teacher(rng, 30, 50)
    _write(tmp_path, {"u": full}, 50, 50, num_shards=1)  # k = S: dense
    reader = sl.SoftLabelReader(tmp_path)
    ids, probs = reader.targets("u", 1, 1.0)
    assert np.array_equal(ids[:, 0], np.argmax(full, axis=1)) and np.all(probs == 1.0)
    ids, probs = reader.targets("u", 50, 1.0)
    dense = np.zeros((30, 50))
    np.put_along_axis(dense, ids, probs, axis=1)
    ref = np.exp(full - full.max(1, keepdims=True))
    np.testing.assert_allclose(dense, ref / ref.sum(1, keepdims=True), atol=3e-3)


def test_invalid_k_and_temperature_are_rejected(stored):
    reader = sl.SoftLabelReader(stored[0])
    utt = next(iter(stored[1]))
    for k, t in ((0, 1.0), (41, 1.0), (2.5, 1.0), (5, 0.0), (5, -1.0)):
        with pytest.raises(sl.SoftLabelError):
            reader.targets(utt, k, t)


def test_storage_dtypes_and_bytes_per_frame(tmp_path):
    rng = np.random.default_rng(2)
    _write(tmp_path / "small", {"u": _teacher(rng, 100, 200)}, 20, 200, num_shards=1)
    assert (tmp_path / "small" / "shard-00000.bin").stat().st_size == 100 * 20 * (2 + 2)  # 80 bytes per frame
    ids = np.zeros((3, 2), np.int64)
    ids[0, 0] = 40000
    w = sl.ShardWriter(tmp_path / "big", 0, 2, 50000)
    w.add("u", ids, np.zeros((3, 2)))
    w.close()
    index = sl.write_index(tmp_path / "big", 2, 50000, 1)
    assert index["id_dtype"] == "int32"
    assert sl.SoftLabelReader(tmp_path / "big").raw("u")[0][0, 0] == 40000


def test_truncated_and_bit_flipped_shards_are_named(stored):
    directory, utterances = stored
    utt = next(iter(utterances))
    shard = directory / f"{sl.shard_name(sl.shard_of(utt, 3))}.bin"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x10
    shard.write_bytes(bytes(data))
    with pytest.raises(sl.SoftLabelError, match=f"{shard.name}: sha256 mismatch"):
        sl.SoftLabelReader(directory).targets(utt, 5)
    with pytest.raises(sl.SoftLabelError, match="crc32 mismatch"):  # with verification off, the crc still catches it
        for u in utterances:
            if sl.shard_of(u, 3) == sl.shard_of(utt, 3):
                sl.SoftLabelReader(directory, verify=False).targets(u, 5)
    shard.write_bytes(bytes(data[:-100]))
    with pytest.raises(sl.SoftLabelError, match=f"{shard.name}: shard is .* bytes, index says .* \\(truncated"):
        sl.SoftLabelReader(directory).targets(utt, 5)


def test_frame_count_mismatch_and_missing_utterance(stored):
    directory, utterances = stored
    reader = sl.SoftLabelReader(directory)
    utt, full = next(iter(utterances.items()))
    reader.targets(utt, 5, expected_frames=full.shape[0])
    with pytest.raises(
        sl.SoftLabelError, match=f"{utt}.*{full.shape[0]} frames but its features have {full.shape[0] + 2}"
    ):
        reader.targets(utt, 5, expected_frames=full.shape[0] + 2)
    with pytest.raises(sl.SoftLabelError, match="'nope' has no soft labels"):
        reader.targets("nope", 5)


def test_index_requires_every_shard(tmp_path):
    sl.ShardWriter(tmp_path, 0, 4, 10).close()
    with pytest.raises(sl.SoftLabelError, match="shard-00001"):
        sl.write_index(tmp_path, 4, 10, 2)


def test_bad_teacher_output_is_rejected(tmp_path):
    w = sl.ShardWriter(tmp_path, 0, 2, 10)
    with pytest.raises(sl.SoftLabelError, match="NaN"):
        w.add("u", np.zeros((3, 2), int), np.array([[0, np.nan]] * 3))
    with pytest.raises(sl.SoftLabelError, match=r"outside \[0, 10\)"):
        w.add("u", np.full((3, 2), 10), np.zeros((3, 2)))


def test_host_top_k_matches_lax_top_k():
    import jax

    from tsasr.distill import label

    rng = np.random.default_rng(3)
    logits = rng.standard_normal((2, 50, 300)).astype(np.float32)
    ties = np.round(rng.standard_normal((40, 300)) * 4).astype(np.float32) / 4  # many exact ties
    ties[:4] = 1.0  # a row of one value
    # Near-ties below the keys' resolution: the k-th place (redone from the full logits) and the
    # order among the k (re-sorted) differ only in the low bits, where the keys hold the senone.
    near = (np.float32(1.5) + np.float32(2**-20) * rng.permutation(300)).astype(np.float32)[None].repeat(4, 0)
    signed = rng.standard_normal((4, 300)).astype(np.float32)
    signed[:, :6] = [0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf]  # ordered as lax.top_k orders them
    for x in (logits, ties, near, signed, -np.abs(logits)):
        for k in (1, 20, 299, 300):
            ids, values = label.host_top_k(x, k)
            ref_values, ref_ids = jax.lax.top_k(x, k)
            assert ids.dtype == np.int32 and values.dtype == np.float32
            assert np.array_equal(ids, np.asarray(ref_ids))
            assert np.array_equal(values.view(np.int32), np.asarray(ref_values).view(np.int32))  # bit for bit


def test_cpu_labelling_matches_the_on_device_top_k(monkeypatch):
    """label_features on CPU (the logits and their keys from the jit, numpy's top-k of the real
    frames) against its GPU/TPU path (jax.lax.top_k inside the jit), on the same padded batches."""
    import jax
    import jax.numpy as jnp

    from tsasr.distill import label
    from tsasr.models import build_model

    fields = {"name": "tdnn", "hidden": 32, "num_layers": 2, "input_context": (2, 2), "dilations": (0, 1)}
    model = build_model({**fields, "subsampling": 1, "num_senones": 90})
    key = jax.random.PRNGKey(0)
    params = model.init({"params": key, "dropout": key}, jnp.zeros((1, 12, 16)), jnp.zeros((1, 12)))["params"]
    rng = np.random.default_rng(4)
    features = {
        f"u{i}": rng.standard_normal((int(n), 16)).astype(np.float32) for i, n in enumerate(rng.integers(5, 70, 21))
    }
    for k in (7, 90):
        labels = label.label_features(model, params, features, k, batch=4, bucket=32)
        with monkeypatch.context() as m:
            m.setattr(jax, "default_backend", lambda: "gpu")
            reference = label.label_features(model, params, features, k, batch=4, bucket=32)
        assert set(labels) == set(reference) == set(features)
        for u, (ref_ids, ref_values) in reference.items():
            ids, values = labels[u]
            assert ids.shape == (len(features[u]), k) and np.array_equal(ids, ref_ids)
            assert np.array_equal(values.view(np.int32), np.asarray(ref_values, np.float32).view(np.int32))
