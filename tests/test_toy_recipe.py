"""A recipe defined outside tsasr (tests/toy/tones.py: frame classification of synthetic tones)
through the runner: training killed with SIGKILL and resumed bit for bit, an evaluation stage
of its own metric, the report from its spec, and an evaluation change that retrains nothing."""

import json
import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest

TESTS = pathlib.Path(__file__).resolve().parent
EXPERIMENT = """
from toy.tones import base_config


def get_config():
    config = base_config()
    config.name = "tones"
    config.lock()
    return config
"""


def run(experiment, workdir, *overrides):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    env["JAX_PLATFORMS"] = "cpu"
    command = [sys.executable, "-m", "tsasr.run", str(experiment), "--workdir", str(workdir), *overrides]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def params(workdir):
    from tsasr.train import checkpoint

    manager_dir = workdir / "classifier" / "checkpoints"
    steps = sorted(int(p.name) for p in manager_dir.iterdir() if p.name.isdigit())
    restored = checkpoint.ocp.CheckpointManager(
        str(manager_dir), options=checkpoint.ocp.CheckpointManagerOptions(read_only=True)
    )
    state = restored.restore(steps[-1], args=checkpoint.ocp.args.StandardRestore())
    restored.close()
    return steps[-1], state["params"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    experiment = root / "tones.py"
    experiment.write_text(EXPERIMENT)
    whole = run(experiment, root / "whole")
    killed = run(experiment, root / "killed", "--config.crash_at_step=13")
    resumed = run(experiment, root / "killed")
    return root, experiment, whole, killed, resumed


def test_runner_trains_evaluates_and_reports_a_user_recipe(runs):
    root, _, whole, _, _ = runs
    assert whole.returncode == 0, whole.stderr[-3000:]
    results = json.loads((root / "whole" / "results.json").read_text())
    accuracy = results["systems"]["classifier"]["frame_accuracy"]
    assert set(accuracy) == {"clean", "noisy"}
    assert accuracy["clean"] > 70.0 > 100.0 / 4  # well above chance over the 4 classes
    for condition, (low, high) in results["systems"]["classifier"]["ci"]["frame_accuracy"].items():
        assert low <= accuracy[condition] <= high
    text = (root / "whole" / "results.md").read_text()
    assert "frame accuracy (%) clean" in text and "Against the paper" not in text
    assert (root / "whole" / "plots" / "frame_accuracy.png").read_bytes()[:4] == b"\x89PNG"
    rows = [json.loads(line) for line in (root / "whole" / "classifier" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [4, 8, 12, 16, 20, 24] and rows[-1]["loss"] < rows[0]["loss"]


def test_a_killed_run_resumes_to_the_same_bits(runs):
    root, _, _, killed, resumed = runs
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "classifier resuming an interrupted run" in resumed.stderr.replace("  ", " ").replace("  ", " ")
    whole_step, whole_params = params(root / "whole")
    resumed_step, resumed_params = params(root / "killed")
    assert whole_step == resumed_step == 24
    for a, b in zip(jax_leaves(whole_params), jax_leaves(resumed_params)):
        np.testing.assert_array_equal(a, b)
    lines = [
        json.loads(line)["step"] for line in (root / "killed" / "classifier" / "metrics.jsonl").read_text().splitlines()
    ]
    assert lines == [4, 8, 12, 16, 20, 24]  # each step logged once across the kill


def test_an_evaluation_change_retrains_nothing(runs):
    root, experiment, _, _, _ = runs
    checkpoints = sorted((root / "whole" / "classifier" / "checkpoints").rglob("*"))
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in checkpoints if p.is_file()}
    rerun = run(experiment, root / "whole", "--config.score.noisy_snr_db=-10.0")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    statuses = {
        line.split()[0]: line.split()[1]
        for line in rerun.stdout.splitlines()
        if line[:1].isalpha() and len(line.split()) > 2
    }
    assert statuses["tones"] == statuses["classifier"] == "skipped" and statuses["score"] == "ran"
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in checkpoints if p.is_file()} == before
    noisier = json.loads((root / "whole" / "results.json").read_text())["systems"]["classifier"]["frame_accuracy"]
    assert (
        noisier["noisy"]
        < json.loads((root / "killed" / "results.json").read_text())["systems"]["classifier"]["frame_accuracy"]["noisy"]
    )


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)
