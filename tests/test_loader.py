"""tsasr.data.loader and tsasr.audio.device_features: streamed batches hold exactly the written
records, bucketed and never repeated within an epoch; they are a function of (seed, step) only,
whatever the worker count, the process count (with fixed row groups) or a restore from Grain's
state; each process reads only its shards; and LFBE computed from them on the device equals the
in-memory path's normalised features."""

import dataclasses
import hashlib

import jax
import numpy as np
import pytest

from tsasr import workdir as wd
from tsasr.audio import device_features
from tsasr.data import batching
from tsasr.data import loader as loader_lib
from tsasr.data import records

WINDOW, SHIFT = 400, 160
BOUNDARIES = (60, 120, 200)


def frames_of(samples: int) -> int:
    return 1 + (samples - WINDOW) // SHIFT


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """120 utterances of 0.3-2 s with alignments and top-2 soft labels, in 4 shards."""
    rng = np.random.default_rng(0)
    examples = {}
    for i in range(120):
        samples = int(rng.integers(5000, 32000))
        frames = frames_of(samples)
        examples[f"utt{i:03d}"] = {
            "id": f"utt{i:03d}",
            "audio": rng.integers(-20000, 20000, samples).astype(np.int16),
            "senones": rng.integers(0, 40, frames).astype(np.int32),
            "soft_ids": rng.integers(0, 40, (frames, 2)).astype(np.int32),
            "soft_logits": rng.normal(size=(frames, 2)).astype(np.float16),
        }
    directory = tmp_path_factory.mktemp("records")
    records.write_split(directory, examples.values(), num_shards=4)
    return directory, examples


def take(iterator, count):
    return [next(iterator) for _ in range(count)]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert sorted(x) == sorted(y)
        for key in x:
            assert x[key].dtype == y[key].dtype, key
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def expected_bucket(frames):
    """The smallest boundary >= frames (written here, not taken from tsasr.data.batching)."""
    return next(b for b in BOUNDARIES if frames <= b)


def test_bucket_lengths_are_batchings():
    frames = np.arange(1, 700)
    expected = [batching.bucket_length(int(n), BOUNDARIES) for n in frames]  # 201 -> 400, 401 -> 600, ...
    np.testing.assert_array_equal(loader_lib.bucket_lengths(frames, BOUNDARIES), expected)


def test_batches_hold_the_records_bucketed_and_each_once_per_epoch(corpus):
    directory, examples = corpus
    loader = loader_lib.Loader(directory, loader_lib.LoaderConfig(batch_size=4, bucket_boundaries=BOUNDARIES))
    # An independent count of the batches of an epoch: per bucket, the total // 4 (one row group).
    buckets = [expected_bucket(frames_of(len(e["audio"]))) for e in examples.values()]
    assert loader.batches_per_epoch == sum(buckets.count(b) // 4 for b in BOUNDARIES)
    for epoch in range(2):
        seen = []
        batches = loader(epoch * loader.batches_per_epoch)
        for _ in range(loader.batches_per_epoch):
            batch = next(batches)
            length = batch["feature_paddings"].shape[1]
            assert batch["audio"].shape == (4, WINDOW + length * SHIFT - 1)  # all of any utterance of <= length frames
            assert batch["audio"].dtype == np.int16
            for row, utt in enumerate(batch["ids"]):
                example = examples[str(utt)]
                samples, frames = len(example["audio"]), frames_of(len(example["audio"]))
                assert expected_bucket(frames) == length
                assert batch["audio_lengths"][row] == samples
                np.testing.assert_array_equal(batch["audio"][row, :samples], example["audio"])
                assert not batch["audio"][row, samples:].any()
                np.testing.assert_array_equal(batch["feature_paddings"][row], np.arange(length) >= frames)
                for key in ("senones", "soft_ids", "soft_logits"):
                    np.testing.assert_array_equal(batch[key][row, :frames], example[key], err_msg=key)
                    assert not batch[key][row, frames:].any(), key
            seen += [str(u) for u in batch["ids"]]
        batches.close()
        assert len(seen) == len(set(seen))  # no utterance twice in an epoch
        assert len(seen) == 4 * loader.batches_per_epoch


def test_same_seed_same_batches_other_epoch_or_seed_other_order(corpus):
    directory, _ = corpus
    config = loader_lib.LoaderConfig(batch_size=4, bucket_boundaries=BOUNDARIES, seed=3)
    first = loader_lib.Loader(directory, config)
    n = first.batches_per_epoch

    def ids(loader, start, count):
        return [tuple(b["ids"]) for b in take(loader(start), count)]

    assert ids(first, 0, n) == ids(loader_lib.Loader(directory, config), 0, n)
    assert ids(first, 0, n) != ids(first, n, n)  # epoch 1 is reshuffled
    other = loader_lib.Loader(directory, loader_lib.LoaderConfig(batch_size=4, bucket_boundaries=BOUNDARIES, seed=4))
    assert ids(first, 0, n) != ids(other, 0, n)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_restored_state_continues_bit_for_bit(corpus, num_workers):
    directory, _ = corpus
    config = loader_lib.LoaderConfig(batch_size=4, bucket_boundaries=BOUNDARIES, num_workers=num_workers)
    loader = loader_lib.Loader(directory, config)
    consumed = loader.batches_per_epoch + 3  # across an epoch boundary
    reference = loader_lib.Loader(directory, loader_lib.LoaderConfig(batch_size=4, bucket_boundaries=BOUNDARIES))
    uninterrupted = take(reference(0), consumed + 5)

    iterator = loader.iterator()
    head = take(iterator, consumed)
    state = iterator.get_state()
    iterator.close()
    restored = loader_lib.Loader(directory, config).iterator()
    restored.set_state(state)
    tail = take(restored, 5)
    restored.close()
    # the same batches as one uninterrupted pass without workers: the worker count changes nothing
    assert_same_batches(head + tail, uninterrupted)
    # and a run resumed by step number (the training loop's batches_fn(start_step)) agrees (without
    # workers: each start of a worker pool costs seconds)
    resumed = loader_lib.Loader(directory, dataclasses.replace(config, num_workers=0))(consumed)
    assert_same_batches(take(resumed, 5), uninterrupted[consumed:])


def test_each_process_reads_only_its_shards_and_together_they_make_the_global_batch(corpus):
    directory, _ = corpus
    index = records.read_index(directory)
    config = loader_lib.LoaderConfig(batch_size=4, bucket_boundaries=BOUNDARIES, groups=2)
    single = loader_lib.Loader(directory, config)
    hosts = [loader_lib.Loader(directory, config, process_index=p, process_count=2) for p in range(2)]
    assert single.batches_per_epoch == hosts[0].batches_per_epoch == hosts[1].batches_per_epoch
    steps = single.batches_per_epoch + 2
    whole = take(single(0), steps)
    parts = [take(host(0), steps) for host in hosts]
    for p, host in enumerate(hosts):
        assert host.paths == records.shard_paths(directory, index)[2 * p : 2 * p + 2]
        for batch in parts[p]:
            for utt in batch["ids"]:  # process p's rows come from shards 2p, 2p + 1 only
                shard = int.from_bytes(hashlib.sha1(str(utt).encode()).digest()[:8], "little") % 4
                assert shard // 2 == p
    # process 0's rows then process 1's are the one-process global batch
    joined = [{k: np.concatenate([a[k], b[k]]) for k in a} for a, b in zip(*parts)]
    assert_same_batches(joined, whole)


def test_row_groups_must_fit_shards_batch_and_processes(corpus):
    directory, _ = corpus
    with pytest.raises(ValueError, match="row groups must divide"):
        loader_lib.Loader(directory, loader_lib.LoaderConfig(batch_size=4, groups=3))
    with pytest.raises(ValueError, match="row groups must divide"):
        loader_lib.Loader(directory, loader_lib.LoaderConfig(batch_size=6, groups=4))
    with pytest.raises(ValueError, match="no bucket has 64 utterances"):
        loader_lib.Loader(directory, loader_lib.LoaderConfig(batch_size=64, bucket_boundaries=BOUNDARIES))


@pytest.mark.parametrize("utterance_mean", [False, True])
def test_device_lfbe_equals_the_in_memory_features(tmp_path, utterance_mean):
    from tsasr.recipes.asr import acoustic

    rng = np.random.default_rng(5)
    manifest = []
    for i in range(6):
        samples = int(rng.integers(6000, 30000))
        t = np.arange(samples) / 16000
        speech = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) * (1 + np.sin(2 * np.pi * 3 * t))
        audio = (speech + 0.02 * rng.normal(size=samples)).astype(np.float32)
        wd.write_audio(tmp_path / f"u{i}.wav", audio)
        manifest.append({"id": f"u{i}", "audio": str(tmp_path / f"u{i}.wav"), "duration": samples / 16000})
    # the in-memory path: features of the whole set, their normalisation, normalised
    features = acoustic.compute_features(manifest)
    norm = acoustic.normalisation(features, utterance_mean=utterance_mean)
    expected = acoustic.normalise(features, norm)

    records.write_split(tmp_path / "records", records.manifest_examples(manifest, lambda _: {}), num_shards=1)
    # the statistics from one streamed pass over the records, in batches of 4 and chunks of 5
    # utterances (a filler row and a second chunk), equal the in-memory ones
    index = records.read_index(tmp_path / "records")
    streamed = device_features.normalisation(
        (r["audio"] for path in records.shard_paths(tmp_path / "records", index) for r in records.read_shard(path)),
        utterance_mean,
        batch_size=4,
        chunk=5,
    )
    assert streamed["utterance_mean"] == utterance_mean
    np.testing.assert_allclose(streamed["mean"], norm["mean"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(streamed["std"], norm["std"], rtol=1e-5, atol=1e-5)
    loader = loader_lib.Loader(tmp_path / "records", loader_lib.LoaderConfig(batch_size=2, bucket_boundaries=(200,)))
    compute = jax.jit(lambda audio, lengths: device_features.from_norm(audio, lengths, norm))
    checked = set()
    for batch in take(loader(0), loader.batches_per_epoch):
        got, paddings = compute(batch["audio"], batch["audio_lengths"])
        got, paddings = np.asarray(got), np.asarray(paddings)
        np.testing.assert_array_equal(paddings, batch["feature_paddings"])
        for row, utt in enumerate(batch["ids"]):
            frames = len(expected[str(utt)])
            np.testing.assert_allclose(got[row, :frames], expected[str(utt)], rtol=1e-5, atol=1e-5)  # seen: 2e-6
            assert not got[row, frames:].any()
            checked.add(str(utt))
    assert checked == {r["id"] for r in manifest}


def test_training_on_streamed_batches_resumes_bit_for_bit(corpus, tmp_path):
    """tsasr.train.loop with the loader as batches_fn and LFBE in the step: a run stopped after a
    checkpoint and rerun ends with the parameters of an uninterrupted run (across epochs)."""
    from tsasr.models import build_model
    from tsasr.train import loop
    from tsasr.train import step as step_lib

    directory, _ = corpus
    config = loop.default_config()
    config.num_steps, config.checkpoint_every, config.log_every, config.progress_bar = 12, 8, 1, False
    loader = loader_lib.Loader(directory, loader_lib.LoaderConfig(batch_size=16, bucket_boundaries=(200,)))
    assert loader.batches_per_epoch < 8  # the resumed run starts in a later epoch
    model = build_model(dict(name="tdnn", num_senones=40, hidden=16, num_layers=1, input_context=(1, 1)))
    norm = {"mean": [-5.0] * 64, "std": [2.0] * 64, "utterance_mean": True}
    loss_fn = device_features.on_audio(step_lib.make_frame_ce_loss(model, "senones"), norm)
    whole = loop.train(config, model, loss_fn, loader, str(tmp_path / "whole"))

    def crash(step):
        if step == 9:  # after the checkpoint of step 8
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        loop.train(config, model, loss_fn, loader, str(tmp_path / "resumed"), after_step=crash)
    resumed = loop.train(config, model, loss_fn, loader, str(tmp_path / "resumed"))
    for a, b in zip(jax.tree.leaves(jax.device_get(whole.params)), jax.tree.leaves(jax.device_get(resumed.params))):
        np.testing.assert_array_equal(a, b)
