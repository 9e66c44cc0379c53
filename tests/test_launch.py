import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from tsasr import launch

from conftest import EXPERIMENT, ROOT

SWEEP_EXPERIMENT = '''
"""A two-point sweep. Run: python -m tsasr.run x.py  Runtime: none."""
from tsasr.recipes.asr import base_config


def get_config():
    config = base_config()
    config.lock()
    return config


def sweep():
    return [{"student.top_k": 5, "student.temperature": 1.0}, {"student.top_k": 20, "student.temperature": 2.0}]
'''


def test_tpu_command_runs_the_experiment_on_every_worker(capsys):
    assert (
        launch.main(
            [
                str(EXPERIMENT),
                "--target",
                "tpu",
                "--name",
                "pod-1",
                "--zone",
                "europe-west4-a",
                "--workdir",
                "gs://bucket/run",
                "--config.student.top_k=40",
            ]
        )
        == 0
    )
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert line.startswith("gcloud compute tpus tpu-vm ssh pod-1 --zone=europe-west4-a --worker=all --command=")
    assert "python -m tsasr.run" in line and "--workdir gs://bucket/run --distributed" in line
    assert "--config.student.top_k=40" in line


def test_sbatch_script_one_task_per_node(capsys):
    launch.main(
        [
            str(EXPERIMENT),
            "--target",
            "slurm",
            "--nodes",
            "4",
            "--gpus-per-node",
            "8",
            "--partition",
            "gpu",
            "--workdir",
            "/scratch/run",
        ]
    )
    script = capsys.readouterr().out
    for line in (
        "#SBATCH --nodes=4",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --partition=gpu",
    ):
        assert line in script
    assert "srun python -m tsasr.run" in script and "--distributed" in script and "--array" not in script


def test_per_point_jobs_for_a_sweep(tmp_path, capsys):
    experiment = tmp_path / "sweep_exp.py"
    experiment.write_text(SWEEP_EXPERIMENT)
    launch.main([str(experiment), "--target", "slurm", "--per-point", "--workdir", "/scratch/sweep"])
    script = capsys.readouterr().out
    assert "#SBATCH --array=0-1" in script
    assert "'--config.student.temperature=1.0 --config.student.top_k=5'" in script
    assert '"/scratch/sweep/${NAMES[$SLURM_ARRAY_TASK_ID]}"' in script
    launch.main([str(experiment), "--target", "tpu", "--per-point", "--workdir", "gs://b/s"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and "gs://b/s/temperature1_top_k5" in lines[0]


def test_typo_fails_before_anything_is_launched():
    with pytest.raises(KeyError, match="student.top_kk"):
        launch.main([str(EXPERIMENT), "--target", "tpu", "--workdir", "x", "--config.student.top_kk=3"])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_launch_trains_the_teacher(tiny_run, tmp_path):
    """Two local processes (gloo collectives, coordinator on 127.0.0.1) run the runner together."""
    source, _ = tiny_run
    workdir = tmp_path / "work"
    shutil.copytree(source, workdir, ignore=shutil.ignore_patterns("teacher_*", "student_*", "labels"))
    for marker in (workdir / ".stages").glob("*"):
        if marker.stem.split(".")[0] not in ("corpus", "noise", "noisify", "align", "graph", "gmm"):
            marker.unlink()
    port = _free_port()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tsasr.run",
                str(EXPERIMENT),
                "--tiny",
                "--workdir",
                str(workdir),
                "--until",
                "decode_teacher_ce",
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num_processes",
                "2",
                "--process_id",
                str(i),
                "--config.teacher.train.num_steps=8",
                "--config.teacher.train.checkpoint_every=8",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "on 2 devices" in outputs[0]  # one global mesh over both processes
    assert (workdir / "teacher_ce" / "checkpoints").exists()
    # the evaluation stage ran on process 0 while process 1 waited for it
    assert "teacher_ce" in json.loads((workdir / "results.json").read_text())["systems"]
