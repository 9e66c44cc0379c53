"""The whole tiny asr recipe as 2 JAX processes on one shared workdir (CPU, gloo collectives).

Every stage runs (with shorter training than --tiny's, to keep the test short): the data
stages (corpus, noise, noisify), the alignment (align), the soft labelling (label,
label_teacher_seq) and every evaluation stage (gmm, decode_<system>) split their work
between the processes; graph and oov run on process 0; every training stage (teacher_ce,
teacher_seq, student_ce, student_ce_from_teacher_seq, student_seq) trains on both, each
process feeding its share of every batch, the fine-tuning ones starting from checkpoints
the two processes wrote. The outputs are those of one process: the data are the bytes of
the session's one-process run, and a one-process alignment, and decode of every checkpoint
the two processes trained, give the same files and results.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from tsasr.hmm import stages as hmm_stages
from tsasr.recipes.asr import stages

from conftest import EXPERIMENT, ROOT, tiny_config
from test_resume_and_multiprocess import free_port

NETWORKS = ("teacher_ce", "teacher_seq", "student_ce", "student_ce_from_teacher_seq", "student_seq")
SPLIT = {  # what a stage's log line names: (what it says each process did, the unit)
    "corpus": ("synthesised", "chunks"),
    "noise": ("synthesised", "chunks"),
    "noisify": ("mixed", "chunks"),
    "align": ("aligned", "utterances"),
    "gmm": ("decoded", "utterances"),
    "labels": ("labelled", "shards"),  # stage label
    "labels_teacher_seq": ("labelled", "shards"),  # stage label_teacher_seq
    **{system: ("decoded", "utterances") for system in NETWORKS},  # their evaluation stages, decode_<system>
}
# Shorter than --tiny's training (60 CE steps; 6 LF-MMI steps of 8 utterances, with the
# held-out LF-MMI loss before and after, slow on a CPU): this test is about who does what,
# not about what the models learn. The CE stages still evaluate on their held-out data.
FAST = (
    "--config.teacher.train.num_steps=10",
    "--config.student.train.num_steps=10",
    "--config.sequence.train.num_steps=1",
    "--config.sequence.batch_size=2",
    "--config.sequence.train.eval_every=0",
)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """(workdir, [log of process 0, log of process 1]) of a 2-process run of the whole recipe."""
    workdir = tmp_path_factory.mktemp("two_processes") / "work"
    coordinator = f"127.0.0.1:{free_port()}"
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=1",
        # The second student and student_seq compile the steps of student_ce and teacher_seq again.
        JAX_COMPILATION_CACHE_DIR=str(workdir.parent / "jax_cache"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    )
    command = [sys.executable, "-m", "tsasr.run", str(EXPERIMENT), "--tiny", "--workdir", str(workdir), *FAST]
    command += ["--coordinator", coordinator, "--num_processes", "2"]
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
        (workdir.parent / f"process_{len(logs)}.log").write_text(output)  # to read when a test fails
        assert process.returncode == 0, output
        logs.append(output)
    return workdir, logs


def test_every_split_stage_is_shared_by_both_processes(two_processes):
    workdir, logs = two_processes
    for stage, (did, unit) in SPLIT.items():
        counts = []
        for i, log in enumerate(logs):
            lines = re.findall(rf"\s{stage}: process {i} of 2 {did} (\d+) of (\d+) {unit}", log)
            assert len(lines) == 1, (stage, i, log)  # once per process
            counts.append(tuple(map(int, lines[0])))
        (mine0, total0), (mine1, total1) = counts
        assert total0 == total1 == mine0 + mine1 and mine0 > 0 and mine1 > 0, (stage, counts)
    # Every training stage (one per network) trains on global batches over both processes' devices.
    for log in logs:
        assert len(re.findall(r"parameters, starting at step 0 of \d+ on 2 devices", log)) == len(NETWORKS), log
    # Process 0 alone says what holds for the merged result.
    for i, log in enumerate(logs):
        assert ("teacher_ce clean: WER" in log) == (i == 0)
    # No part file is left behind.
    assert not list(workdir.glob("*/.parts")) and not list(workdir.glob("decode/*/parts"))
    assert sorted(json.loads((workdir / "results.json").read_text())["systems"]) == sorted(("gmm", *NETWORKS))
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


def test_alignment_and_decoding_equal_one_process(two_processes, tmp_path):
    """One process aligns as the two did, and decodes every checkpoint they wrote as they did
    (the evaluation stages in the recipe's order, so each compares with the same references)."""
    workdir, _ = two_processes
    one = tmp_path / "one"
    shutil.copytree(workdir, one)
    for directory in ("align", "lang", "decode"):
        shutil.rmtree(one / directory)
    (one / "results.json").unlink()
    config = tiny_config(**dict(override.split("=", 1) for override in FAST))
    hmm_stages.align(config, one)
    for directory in ("align", "lang"):
        two_files, one_files = _files(workdir / directory), _files(one / directory)
        assert sorted(two_files) == sorted(one_files), directory
        for name in set(one_files) - {"summary.json"}:  # the summary holds timings
            assert two_files[name] == one_files[name], f"{directory}/{name}"
    for stage in stages.recipe_stages(config):
        if stage.kind == "evaluate" and stage.name != "oov":  # gmm, then decode_<system>
            stage.run(config, one)  # a network's checkpoint, written by 2 processes, loaded by 1
    two_results = json.loads((workdir / "results.json").read_text())["systems"]
    one_results = json.loads((one / "results.json").read_text())["systems"]
    for system in ("gmm", *NETWORKS):
        two_files, one_files = _files(workdir / "decode" / system), _files(one / "decode" / system)
        assert sorted(two_files) == sorted(one_files) == ["clean.json", "noisy.json", "rerecorded.json"], system
        assert two_files == one_files, system
        assert two_results[system] == one_results[system], system
