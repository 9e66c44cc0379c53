"""The workdir's path layer (tsasr.workdir) on storage that is not a local filesystem.

etils.epath opens gs://, s3://, az:// and hf:// URIs and nothing else (`memory://x` would be a
local path to it); gs:// goes through fsspec's "gs" implementation (gcsfs) when TensorFlow is
absent. Here fsspec's in-memory filesystem is registered as "gs", so `gs://bucket/run` takes
epath's real gs:// code path, offline, into a dict. Orbax checkpoints are not tested on it: orbax
writes a gs:// checkpoint's arrays with tensorstore's own GCS driver and asks the bucket for its
namespace with google-cloud-storage, neither of which fsspec reaches.
"""

import importlib
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
import soundfile
from etils.epath import backend
from fsspec.implementations.memory import MemoryFileSystem

from tsasr import pipeline
from tsasr import workdir as wd

from conftest import EXPERIMENT, ROOT


class InMemoryBucket(MemoryFileSystem):
    """fsspec's memory filesystem answering to gs:// (what gcsfs answers to)."""

    protocol = ("gs", "gcs")
    store: dict = {}
    pseudo_dirs = [""]

    @classmethod
    def _strip_protocol(cls, path):
        path = os.fspath(path)
        for scheme in ("gs://", "gcs://"):
            if path.startswith(scheme):
                path = "memory://" + path[len(scheme) :]
        return super()._strip_protocol(path)


@pytest.fixture
def bucket(monkeypatch, tmp_path):
    """An empty in-memory gs://bucket; the test runs in an empty local directory, which must
    stay empty (no `gs:` directory made of a URI)."""
    registry = importlib.import_module("fsspec.registry")._registry  # its table of implementations (not the view)
    for name in InMemoryBucket.protocol:
        monkeypatch.setitem(registry, name, InMemoryBucket)
    backend.fsspec_backend._get_filesystem.cache_clear()  # epath caches one filesystem per protocol
    InMemoryBucket.store.clear()
    InMemoryBucket.pseudo_dirs[:] = [""]
    monkeypatch.chdir(tmp_path)
    yield wd.as_path("gs://bucket/run")
    backend.fsspec_backend._get_filesystem.cache_clear()
    assert list(tmp_path.iterdir()) == []


def _objects():
    return sorted(InMemoryBucket.store)


def test_a_uri_stays_a_uri_and_a_collapsed_one_is_refused():
    path = wd.as_path("gs://bucket/run")
    assert not isinstance(path, type(wd.as_path("/local"))) and os.fspath(path / "x.json") == "gs://bucket/run/x.json"
    assert wd.absolute("gs://bucket/run") == "gs://bucket/run" and wd.absolute("rel") == os.path.abspath("rel")
    with pytest.raises(ValueError, match="slash lost"):
        wd.as_path("gs:/bucket/run")  # what pathlib.Path("gs://bucket/run") is
    with pytest.raises(ValueError, match="not a storage URI"):
        wd.as_path("memory://run")
    with pytest.raises(ValueError, match="gcsfuse"):
        wd.local_workdir("gs://bucket/run")
    assert wd.local_workdir("runs/x") == wd.as_path("runs/x")


def test_writers_and_markers_on_a_bucket(bucket):
    wd.write_json(bucket / "config.json", {"seed": np.int64(3), "where": bucket})
    wd.write_jsonl(bucket / "corpus" / "dev.jsonl", [{"id": "a"}, {"id": "b"}])
    wd.write_npz(bucket / "tones" / "train.npz", {"x": np.arange(4.0)})
    audio = np.linspace(-0.5, 0.5, 160, dtype=np.float32)
    wd.write_audio(bucket / "audio" / "a.wav", audio)
    with wd.atomic_path(bucket / "graph" / "HCLG.npy") as tmp:  # a writer that wants a local file name
        np.save(str(tmp), np.eye(2))
    assert _objects() == [
        "/bucket/run/audio/a.wav",
        "/bucket/run/config.json",
        "/bucket/run/corpus/dev.jsonl",
        "/bucket/run/graph/HCLG.npy",
        "/bucket/run/tones/train.npz",
    ]  # the final names only: every temporary object was renamed away
    assert wd.read_json(bucket / "config.json") == {"seed": 3, "where": "gs://bucket/run"}
    assert wd.read_text(bucket / "corpus" / "dev.jsonl").splitlines() == ['{"id": "a"}', '{"id": "b"}']
    with (bucket / "tones" / "train.npz").open("rb") as f:
        np.testing.assert_array_equal(np.load(f)["x"], np.arange(4.0))
    with (bucket / "audio" / "a.wav").open("rb") as f:
        read, rate = soundfile.read(f, dtype="float32")
    assert rate == 16000 and np.abs(read - audio).max() <= 0.5 / 32768
    with (bucket / "graph" / "HCLG.npy").open("rb") as f:
        np.testing.assert_array_equal(np.load(f), np.eye(2))
    assert sorted(p.name for p in bucket.iterdir()) == ["audio", "config.json", "corpus", "graph", "tones"]

    assert wd.read_marker(bucket, "corpus") is None
    wd.write_marker(bucket, "corpus", "k1", {"utterances": 2})
    assert wd.read_marker(bucket, "corpus") == {"stage": "corpus", "key": "k1", "summary": {"utterances": 2}}
    wd.clear_marker(bucket, "corpus")
    assert wd.read_marker(bucket, "corpus") is None and wd.exists(bucket / "config.json")
    wd.rmtree(bucket / "graph")
    assert not wd.exists(bucket / "graph" / "HCLG.npy")


def test_a_failed_write_on_a_bucket_leaves_nothing(bucket):
    wd.write_text(bucket / "results.json", "old\n")
    with pytest.raises(RuntimeError):
        with wd.atomic_path(bucket / "results.json") as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    assert _objects() == ["/bucket/run/results.json"] and wd.read_text(bucket / "results.json") == "old\n"


def test_stages_on_a_bucket_workdir(bucket):
    """The runner's markers, skips and the superseding of a trained model, on gs://."""

    def writer(name):
        def run(config, workdir):
            assert os.fspath(workdir) == "gs://bucket/run" and not wd.exists(workdir / name / "weights.bin")
            wd.write_text(workdir / name / "weights.bin", str(config.seed))
            return {"seed": config.seed}

        return run

    stages = (
        pipeline.Stage("prepare", writer("prepared"), ("corpus",), outputs=("prepared",)),
        pipeline.Stage("train", writer("model"), ("seed",), deps=("prepare",), outputs=("model",), kind="train"),
    )
    first = ml_collections.ConfigDict({"seed": 0, "corpus": {"hours": 1.0}})
    report = pipeline.run_stages(first, "gs://bucket/run", stages)
    assert [report[s]["status"] for s in ("prepare", "train")] == ["ran", "ran"]
    again = pipeline.run_stages(first, "gs://bucket/run", stages)
    assert [again[s]["status"] for s in ("prepare", "train")] == ["skipped", "skipped"]
    old_key = pipeline.stage_keys(first, stages)["train"]
    second = ml_collections.ConfigDict({"seed": 7, "corpus": {"hours": 1.0}})
    report = pipeline.run_stages(second, bucket, stages)
    assert [report[s]["status"] for s in ("prepare", "train")] == ["skipped", "ran"]
    assert wd.read_text(bucket / "model" / "weights.bin") == "7"
    assert wd.read_text(bucket / "superseded" / f"model.{old_key}" / "weights.bin") == "0"
    assert wd.read_marker(bucket, "train")["summary"] == {"seed": 7}


def test_training_refuses_a_uri_workdir(bucket):
    from tsasr.train import loop

    with pytest.raises(ValueError, match="metrics are written to local files"):
        loop.train(None, None, None, None, "gs://bucket/run/classifier")


@pytest.mark.parametrize("workdir", ["gs://bucket/run", "gs:/bucket/run"])
def test_the_runner_refuses_a_bucket_workdir_in_one_line(tmp_path, workdir):
    command = [sys.executable, "-m", "tsasr.run", str(EXPERIMENT), "--workdir", workdir, "--tiny"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"error: --workdir {workdir}: ")
    assert ("gcsfuse" in line and "/mnt/gcs/BUCKET/RUN" in line) if "//" in workdir else "slash lost" in line
    assert list(tmp_path.iterdir()) == []  # no gs: directory, no runs/, no log
