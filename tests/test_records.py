"""tsasr.data.records: a split written as ArrayRecord shards reads back bit for bit, each
utterance in the shard its id hashes to, with an index that matches an independent count, and a
killed writer leaves nothing a reader would take for a complete split."""

import hashlib
import json

import numpy as np
import pytest

from tsasr import workdir as wd
from tsasr.data import records

WINDOW, SHIFT = 400, 160  # 25 ms / 10 ms at 16 kHz, written out here rather than taken from tsasr


def frames_of(samples: int) -> int:
    return 1 + (samples - WINDOW) // SHIFT


def make_examples(count=40, seed=0, soft_k=3):
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(count):
        samples = int(rng.integers(2000, 20000))
        frames = frames_of(samples)
        examples.append(
            {
                "id": f"spk{i % 3}-utt{i:03d}",
                "audio": rng.integers(-32768, 32767, samples, endpoint=True).astype(np.int16),
                "senones": rng.integers(0, 100, frames).astype(np.int32),
                "soft_ids": rng.integers(0, 100, (frames, soft_k)).astype(np.int32),
                "soft_logits": rng.normal(size=(frames, soft_k)).astype(np.float16),
            }
        )
    return examples


def read_all(directory):
    index = records.read_index(directory)
    return index, [list(records.read_shard(p)) for p in records.shard_paths(directory, index)]


def test_round_trip_shards_and_index(tmp_path):
    examples = make_examples()
    index = records.write_split(tmp_path, examples, num_shards=4)
    assert index == json.loads((tmp_path / "index.json").read_text())
    _, shards = read_all(tmp_path)
    by_id = {e["id"]: e for e in examples}
    seen = []
    for shard, shard_records in enumerate(shards):
        for record in shard_records:
            # the shard is sha1(id) mod 4, computed here independently of records.shard_of
            digest = hashlib.sha1(record["id"].encode()).digest()
            assert int.from_bytes(digest[:8], "little") % 4 == shard
            expected = by_id[record["id"]]
            assert set(record) == set(expected)
            for key in ("audio", "senones", "soft_ids", "soft_logits"):
                assert record[key].dtype == expected[key].dtype, key
                np.testing.assert_array_equal(record[key], expected[key], err_msg=key)
            seen.append(record["id"])
        # records keep the order they were given in within their shard
        order = [e["id"] for e in examples if e["id"] in {r["id"] for r in shard_records}]
        assert [r["id"] for r in shard_records] == order
    assert sorted(seen) == sorted(by_id)
    assert index["records"] == len(examples)
    assert index["frames"] == sum(frames_of(len(e["audio"])) for e in examples)
    assert index["hours"] == pytest.approx(sum(len(e["audio"]) for e in examples) / 16000 / 3600)
    for shard, (entry, frames) in enumerate(zip(index["shards"], records.shard_frames(tmp_path, index))):
        assert entry["records"] == len(shards[shard])
        np.testing.assert_array_equal(frames, [frames_of(len(r["audio"])) for r in shards[shard]])
        assert entry["frames"] == int(frames.sum())
    assert index["keys"]["soft_logits"] == {"dtype": "float16", "shape": [3]}
    assert index["lfbe"] == {"sample_rate": 16000, "window": WINDOW, "shift": SHIFT}


def test_shard_assignment_does_not_depend_on_order(tmp_path):
    examples = make_examples(count=30, seed=1)
    records.write_split(tmp_path / "forward", examples, num_shards=3)
    records.write_split(tmp_path / "reversed", examples[::-1], num_shards=3)
    _, forward = read_all(tmp_path / "forward")
    _, backward = read_all(tmp_path / "reversed")
    assert [sorted(r["id"] for r in s) for s in forward] == [sorted(r["id"] for r in s) for s in backward]
    assert all(len(s) for s in forward)  # 30 ids over 3 shards: none empty (a constant hash would fail)


def test_float_audio_is_stored_as_exact_pcm16_and_targets_fit_the_frames(tmp_path):
    pcm = np.random.default_rng(2).integers(-32768, 32767, 8000, endpoint=True).astype(np.int16)
    frames = frames_of(len(pcm))
    examples = [
        # float32 audio as read_audio gives it (int / 32768): stored back as the same int16
        {"id": "long", "audio": pcm.astype(np.float32) / 32768, "senones": np.arange(frames + 2, dtype=np.int32)},
        {"id": "short", "audio": pcm, "senones": np.arange(frames - 2, dtype=np.int32)},
    ]
    records.write_split(tmp_path, examples, num_shards=1, max_length_mismatch=2)
    (got,) = read_all(tmp_path)[1]
    got = {r["id"]: r for r in got}
    np.testing.assert_array_equal(got["long"]["audio"], pcm)
    np.testing.assert_array_equal(got["long"]["senones"], np.arange(frames))  # cut to the audio's frames
    np.testing.assert_array_equal(
        got["short"]["senones"], np.r_[np.arange(frames - 2), frames - 3, frames - 3]
    )  # edge-padded
    with pytest.raises(ValueError, match="'long'.*senones.*allowed mismatch 1"):
        records.write_split(tmp_path / "strict", examples, num_shards=1, max_length_mismatch=1)


def test_bad_examples_are_refused(tmp_path):
    examples = make_examples(count=3)
    with pytest.raises(ValueError, match="appears more than once"):
        records.write_split(tmp_path / "a", examples + examples[:1], num_shards=2)
    other = dict(examples[1], senones=examples[1]["senones"].astype(np.int64))
    with pytest.raises(ValueError, match="differ from the first record"):
        records.write_split(tmp_path / "b", [examples[0], other], num_shards=2)


def test_a_killed_writer_leaves_no_split(tmp_path):
    examples = make_examples(count=10)

    def dying():
        yield from examples[:5]
        raise KeyboardInterrupt  # as a kill would stop it mid-split

    with pytest.raises(KeyboardInterrupt):
        records.write_split(tmp_path, dying(), num_shards=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no shard under a final name, no temporary left
    with pytest.raises(FileNotFoundError, match="no index.json"):
        records.read_index(tmp_path)


def test_manifest_examples_carry_the_clean_twins_targets(tmp_path):
    rng = np.random.default_rng(3)
    clean = {f"c{i}": rng.integers(-2000, 2000, 4000 + 800 * i).astype(np.int16) for i in range(3)}
    targets = {utt: {"senones": np.full(frames_of(len(a)), i, np.int32)} for i, (utt, a) in enumerate(clean.items())}
    manifest = []
    for utt, audio in clean.items():
        noisy = (audio.astype(np.float32) + rng.integers(-100, 100, len(audio))) / 32768
        wd.write_audio(tmp_path / f"{utt}-noisy.wav", noisy)
        manifest.append({"id": f"{utt}-noisy", "clean_id": utt, "audio": str(tmp_path / f"{utt}-noisy.wav")})
    records.write_split(tmp_path / "records", records.manifest_examples(manifest, targets.get, by="clean_id"), 1)
    (got,) = read_all(tmp_path / "records")[1]
    assert [r["id"] for r in got] == [f"{u}-noisy" for u in clean]
    for record, (utt, audio) in zip(got, clean.items()):
        np.testing.assert_array_equal(record["senones"], targets[utt]["senones"])
        assert not np.array_equal(record["audio"], audio)  # the noisy copy's audio, not the clean one's
        assert len(record["audio"]) == len(audio)
