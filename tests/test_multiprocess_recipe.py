"""The tiny asr recipe as 2 JAX processes on one shared workdir (CPU, gloo collectives).

Every stage up to the first network's evaluation runs: the data stages (corpus, noise,
noisify), the alignment (align) and the evaluation stages (gmm, decode_teacher_ce) split
their work between the processes; graph and oov run on process 0; teacher_ce trains on
both. The outputs are those of one process: the data are the bytes of the session's
one-process run, and a one-process alignment, and decode of the checkpoint the two
processes trained, give the same files and results.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import jax
import orbax.checkpoint as ocp
import pytest

from tsasr.hmm import stages as hmm_stages
from tsasr.models import build_model
from tsasr.recipes.asr import evaluate
from tsasr.train import loop

from conftest import EXPERIMENT, ROOT, tiny_config
from test_resume_and_multiprocess import free_port

UNTIL = "decode_teacher_ce"
SPLIT = {  # stage: (what its log line says each process did, the unit)
    "corpus": ("synthesised", "chunks"),
    "noise": ("synthesised", "chunks"),
    "noisify": ("mixed", "chunks"),
    "align": ("aligned", "utterances"),
    "gmm": ("decoded", "utterances"),
    "teacher_ce": ("decoded", "utterances"),  # its evaluation stage, decode_teacher_ce
}


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """(workdir, [log of process 0, log of process 1]) of a 2-process run until decode_teacher_ce."""
    workdir = tmp_path_factory.mktemp("two_processes") / "work"
    coordinator = f"127.0.0.1:{free_port()}"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    command = [sys.executable, "-m", "tsasr.run", str(EXPERIMENT), "--tiny", "--workdir", str(workdir)]
    command += ["--until", UNTIL, "--coordinator", coordinator, "--num_processes", "2"]
    processes = [
        subprocess.Popen(
            [*command, "--process_id", str(i)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    logs = []
    for process in processes:
        output, _ = process.communicate(timeout=400)
        assert process.returncode == 0, output
        logs.append(output)
    return workdir, logs


def test_every_split_stage_is_shared_by_both_processes(two_processes):
    workdir, logs = two_processes
    for stage, (did, unit) in SPLIT.items():
        counts = []
        for i, log in enumerate(logs):
            lines = re.findall(rf"{stage}: process {i} of 2 {did} (\d+) of (\d+) {unit}", log)
            assert len(lines) == 1, (stage, i, log)  # once per process
            counts.append(tuple(map(int, lines[0])))
        (mine0, total0), (mine1, total1) = counts
        assert total0 == total1 == mine0 + mine1 and mine0 > 0 and mine1 > 0, (stage, counts)
    # Process 0 alone says what holds for the merged result.
    for i, log in enumerate(logs):
        assert ("teacher_ce clean: WER" in log) == (i == 0)
    # No part file is left behind.
    assert not list(workdir.glob("*/.parts")) and not list(workdir.glob("decode/*/parts"))
    assert not (workdir / "align" / ".exchange").exists()


def _files(directory: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_data_are_the_bytes_of_one_process(two_processes, tiny_run):
    workdir, _ = two_processes
    one, _ = tiny_run
    for stage in ("corpus", "noise", "noisify"):  # the same config: the same stage keys
        marker = json.loads((workdir / ".stages" / f"{stage}.json").read_text())
        assert marker["key"] == json.loads((one / ".stages" / f"{stage}.json").read_text())["key"], stage
    for directory in ("corpus", "noise", "noisy"):
        two_files, one_files = _files(workdir / directory), _files(one / directory)
        assert sorted(two_files) == sorted(one_files), directory
        for name, data in one_files.items():
            assert two_files[name] == data, f"{directory}/{name}"


def _load_params(directory: pathlib.Path):
    """The params of a checkpoint written by any number of processes, on this process's device
    (restored against a target built from the checkpoint's own metadata)."""
    best = pathlib.Path(loop.best_checkpoint(str(directory)))
    step = max(int(p.name) for p in best.iterdir() if p.name.isdigit())
    path = best / str(step) / "default"
    checkpointer = ocp.StandardCheckpointer()
    metadata = checkpointer.metadata(path)
    tree = getattr(getattr(metadata, "item_metadata", metadata), "tree", metadata)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), tree)
    return checkpointer.restore(path, target)["params"]


def test_alignment_and_decoding_equal_one_process(two_processes, tmp_path):
    workdir, _ = two_processes
    one = tmp_path / "one"
    shutil.copytree(workdir, one)
    for directory in ("align", "lang", "decode/gmm", "decode/teacher_ce"):
        shutil.rmtree(one / directory)
    config = tiny_config()
    hmm_stages.align(config, one)
    for directory in ("align", "lang"):
        two_files, one_files = _files(workdir / directory), _files(one / directory)
        assert sorted(two_files) == sorted(one_files), directory
        for name in set(one_files) - {"summary.json"}:  # the summary holds timings
            assert two_files[name] == one_files[name], f"{directory}/{name}"
    evaluate.gmm(config, one)
    model = build_model(json.loads((one / "teacher_ce" / "model.json").read_text()))
    norm = json.loads((one / "teacher_ce" / "norm.json").read_text())
    evaluate.decode_network(config, one, "teacher_ce", model, _load_params(one / "teacher_ce"), norm, "gmm")
    for system in ("gmm", "teacher_ce"):
        two_files, one_files = _files(workdir / "decode" / system), _files(one / "decode" / system)
        assert sorted(two_files) == sorted(one_files) == ["clean.json", "noisy.json", "rerecorded.json"]
        assert two_files == one_files, system
    two_results = json.loads((workdir / "results.json").read_text())["systems"]
    one_results = json.loads((one / "results.json").read_text())["systems"]
    assert two_results["gmm"] == one_results["gmm"]
    assert two_results["teacher_ce"] == one_results["teacher_ce"]
