"""Bucketed batching: determinism, coverage, host sharding, resume, bad input."""

import numpy as np
import pytest

from tsasr.data import batching
from tsasr.train.synthetic import BATCH_KEYS, synthetic_examples


def make_batcher(examples=None, process_index=0, process_count=1, **overrides):
    examples = examples or synthetic_examples(50, seed=3, min_frames=5, max_frames=70)
    config = dict(batch_size=4, bucket_boundaries=(20, 40), seed=11, keys=BATCH_KEYS)
    config.update(overrides)
    return batching.Batcher(examples, batching.BatchingConfig(**config), process_index, process_count)


def test_plan_is_a_function_of_seed_and_epoch():
    first, second = make_batcher(), make_batcher()
    for epoch in range(3):
        a, b = first.plan(epoch), second.plan(epoch)
        assert [(n, list(i)) for n, i in a] == [(n, list(i)) for n, i in b]
    assert [list(i) for _, i in first.plan(0)] != [list(i) for _, i in first.plan(1)]


def test_every_utterance_once_per_epoch_padded_to_its_bucket():
    batcher = make_batcher(drop_remainder=False)
    seen = []
    for batch in batcher.epoch(0):
        length = batch["features"].shape[1]
        assert length in (20, 40, 80)
        for row, utt in enumerate(batch["ids"]):
            if not utt:
                assert np.all(batch["feature_paddings"][row] == 1.0)
                continue
            seen.append(utt)
            example = next(e for e in batcher.examples if e["id"] == utt)
            frames = example["features"].shape[0]
            assert batching.bucket_length(frames, (20, 40)) == length
            np.testing.assert_array_equal(batch["features"][row, :frames], example["features"])
            np.testing.assert_array_equal(batch["senones"][row, :frames], example["senones"])
            assert batch["feature_paddings"][row].sum() == length - frames
    assert sorted(seen) == sorted(e["id"] for e in batcher.examples)


def test_hosts_take_their_rows_of_the_same_global_batch():
    whole = make_batcher()(0)
    hosts = [make_batcher(process_index=i, process_count=2)(0) for i in range(2)]
    for _ in range(10):
        expected = next(whole)
        parts = [next(h) for h in hosts]
        for key in ("features", "senones", "feature_paddings"):
            np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), expected[key])
        assert list(parts[0]["ids"]) == list(expected["ids"])


def test_rows_of_steps_names_the_utterances_each_host_batches():
    """rows_of_steps, from the plan alone, against what each host's batches hold (rows matched to
    utterances by their features), over 2.5 epochs: a host may compute only those inputs."""
    hosts = [make_batcher(process_index=i, process_count=2) for i in range(2)]
    num_steps = 2 * hosts[0].batches_per_epoch + hosts[0].batches_per_epoch // 2
    by_features = {e["features"].tobytes(): e["id"] for e in hosts[0].examples}
    batched = []
    for host in hosts:
        seen, stream = set(), host(0)
        for _ in range(num_steps):
            batch = next(stream)
            for row, paddings in enumerate(batch["feature_paddings"]):
                frames = int((paddings == 0).sum())
                if frames:
                    seen.add(by_features[batch["features"][row, :frames].tobytes()])
        batched.append(seen)
    for host, seen in zip(hosts, batched):
        mine, anyone = host.rows_of_steps(num_steps)
        assert mine == seen and anyone == batched[0] | batched[1]
    assert batched[0] and batched[1]
    one_epoch = hosts[0].rows_of_steps(hosts[0].batches_per_epoch)[1]
    assert one_epoch < {e["id"] for e in hosts[0].examples}  # drop_remainder: a bucket's remainder is in no row


def test_starting_at_a_step_continues_the_uninterrupted_stream():
    batcher = make_batcher()
    stream = batcher(0)
    uninterrupted = [next(stream)["ids"].tolist() for _ in range(3 * batcher.batches_per_epoch)]
    start = batcher.batches_per_epoch + 2  # Mid second epoch.
    resumed = batcher(start)
    for expected in uninterrupted[start:]:
        assert next(resumed)["ids"].tolist() == expected


def test_bad_examples_are_named():
    examples = synthetic_examples(12, seed=0)
    examples[2]["features"][3, 1] = np.nan
    with pytest.raises(ValueError, match="'utt00002'.*NaN"):
        make_batcher(examples)
    examples = synthetic_examples(12, seed=0)
    examples[4]["senones"] = examples[4]["senones"][:-2]
    with pytest.raises(ValueError, match="'utt00004'.*`senones` has"):
        make_batcher(examples)
    examples = synthetic_examples(12, seed=0)
    del examples[7]["senones"]
    with pytest.raises(ValueError, match="'utt00007' lacks \\['senones'\\]"):
        make_batcher(examples)
    examples = synthetic_examples(12, seed=0)
    examples[4]["senones"] = examples[4]["senones"][:-2]
    # Within the allowed mismatch the alignment is edge-padded to the features.
    fitted = make_batcher(examples, max_length_mismatch=2).examples[4]
    assert fitted["senones"].shape[0] == fitted["features"].shape[0]


def test_an_undeclared_key_is_an_error_not_dropped():
    examples = synthetic_examples(12, seed=0)
    examples[5]["speaker"] = np.asarray(3)
    with pytest.raises(ValueError, match="'utt00005'.*\\['speaker'\\] are not declared"):
        make_batcher(examples)
    with pytest.raises(ValueError, match="'frame' or 'clip'"):
        make_batcher(keys={**BATCH_KEYS, "speaker": "utterance"})


def test_clip_level_keys_are_stacked_and_frame_level_keys_padded():
    examples = synthetic_examples(9, seed=0, min_frames=5, max_frames=15)
    for i, example in enumerate(examples):
        example["tags"] = np.eye(4, dtype=np.float32)[i % 4]
    keys = {**BATCH_KEYS, "tags": batching.CLIP}
    batcher = make_batcher(examples, keys=keys, drop_remainder=False)
    by_id = {e["id"]: e for e in examples}
    for batch in batcher.epoch(0):
        assert batch["tags"].shape == (4, 4) and batch["senones"].shape == batch["feature_paddings"].shape
        for row, utt in enumerate(batch["ids"]):
            expected = by_id[utt]["tags"] if utt else np.zeros(4, np.float32)  # filler rows are zero
            np.testing.assert_array_equal(batch["tags"][row], expected)


def test_prefetch_preserves_order_and_raises_producer_errors():
    batcher = make_batcher()
    stream = batcher(0)
    expected = [next(stream)["ids"].tolist() for _ in range(5)]
    fetched = batching.prefetch(batcher(0), lambda b: b, size=2)
    assert [next(fetched)[1].tolist() for _ in range(5)] == expected

    def broken():
        yield {"ids": np.asarray(["a"])}
        raise RuntimeError("reader failed")

    fetched = batching.prefetch(broken(), lambda b: b)
    next(fetched)
    with pytest.raises(RuntimeError, match="reader failed"):
        next(fetched)
