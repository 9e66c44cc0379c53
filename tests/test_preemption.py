"""SIGTERM during training, the preemption notice of spot VMs and SLURM (tsasr.train.preemption):
a checkpoint at the next step boundary, exit 143, and a rerun of the same command that ends with
the parameters of an uninterrupted run, bit for bit. The toy recipe (tests/toy/tones.py) runs
through the runner in subprocesses, as in tests/test_toy_recipe.py."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from test_toy_recipe import EXPERIMENT, TESTS, jax_leaves, params, run


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("preemption")
    (root / "tones.py").write_text(EXPERIMENT)
    return root / "tones.py"


@pytest.fixture(scope="module")
def whole(experiment):
    """An uninterrupted run's last step and parameters."""
    done = run(experiment, experiment.parent / "whole")
    assert done.returncode == 0, done.stderr[-3000:]
    return params(experiment.parent / "whole")


def _checkpoint_steps(workdir):
    return sorted(int(p.name) for p in (workdir / "classifier" / "checkpoints").iterdir() if p.name.isdigit())


def _logged_steps(workdir):
    return [json.loads(line)["step"] for line in (workdir / "classifier" / "metrics.jsonl").read_text().splitlines()]


def _assert_resumes_to(workdir, experiment, whole):
    resumed = run(experiment, workdir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "classifier resuming an interrupted run" in re.sub(" +", " ", resumed.stderr)
    step, resumed_params = params(workdir)
    assert step == whole[0] == 24
    for a, b in zip(jax_leaves(whole[1]), jax_leaves(resumed_params)):
        np.testing.assert_array_equal(a, b)
    assert _logged_steps(workdir) == [4, 8, 12, 16, 20, 24]  # each step logged once across the stop


def test_sigterm_checkpoints_at_the_next_step_and_the_rerun_is_bit_for_bit(experiment, whole):
    """SIGTERM while step 13 runs (0-based: the 14th): a checkpoint at step 14, between the periodic
    ones (every 8), the stage left unfinished, exit 143; the rerun ends on the uninterrupted bits."""
    workdir = experiment.parent / "term"
    stopped = run(experiment, workdir, "--config.crash_at_step=13", "--config.crash_signal=SIGTERM")
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert "preempted: SIGTERM received, checkpoint saved at step 14" in stopped.stderr
    assert _checkpoint_steps(workdir) == [8, 14]
    assert _logged_steps(workdir) == [4, 8, 12]
    stages = workdir / ".stages"
    assert (stages / "classifier.started.json").exists() and not (stages / "classifier.json").exists()
    assert not (workdir / "results.json").exists()  # the run stopped: no later stage ran
    _assert_resumes_to(workdir, experiment, whole)


def test_sigterm_from_outside_stops_promptly_and_resumes(experiment, whole):
    """A SIGTERM sent by another process at an arbitrary moment of training (1 s per step): the run
    exits within a few seconds, not after the ~20 steps left, with a checkpoint at the step it
    stopped at; the rerun ends on the uninterrupted bits."""
    workdir = experiment.parent / "outside"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    env["JAX_PLATFORMS"] = "cpu"
    command = [sys.executable, "-m", "tsasr.run", str(experiment), "--workdir", str(workdir)]
    process = subprocess.Popen(
        command + ["--config.step_seconds=1.0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    metrics = workdir / "classifier" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().strip()):  # step 4 logged: training is under way
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
        time.sleep(0.1)
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    seconds = time.monotonic() - sent
    assert process.returncode == 143, stderr[-3000:]
    step = int(re.search(r"checkpoint saved at step (\d+)", stderr).group(1))
    assert 4 <= step < 12 and _checkpoint_steps(workdir)[-1] == step
    assert seconds < 10, f"{seconds:.1f} s from SIGTERM to exit"
    _assert_resumes_to(workdir, experiment, whole)


def _two_processes(experiment, workdir, *overrides):
    """The runner in 2 processes of one CPU device each (a 2-host job), started; their Popens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    command = [sys.executable, "-m", "tsasr.run", str(experiment), "--workdir", str(workdir), *overrides]
    command += ["--until", "classifier"]  # the toy's evaluation runs on process 0 alone: one-process runs only
    command += ["--coordinator", f"127.0.0.1:{port}", "--num_processes", "2"]
    return [
        subprocess.Popen(command + ["--process_id", str(i)], env=env, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]


def _params_on_one_device(workdir):
    """The last checkpoint's step and params, restored onto this process's first device whatever
    the topology that saved them (2 processes here)."""
    import jax
    import orbax.checkpoint as ocp

    directory = workdir / "classifier" / "checkpoints"
    item = directory / str(max(int(p.name) for p in directory.iterdir() if p.name.isdigit())) / "default"
    checkpointer = ocp.StandardCheckpointer()
    metadata = checkpointer.metadata(item)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), getattr(metadata, "item_metadata", metadata)
    )
    return int(item.parent.name), checkpointer.restore(item, target)["params"]


def test_sigterm_to_one_process_of_two_stops_both_at_one_step(experiment):
    """A pod's preemption notice may reach one host: both processes stop after the same step (JAX's
    preemption sync point), write one checkpoint together and exit 143; the 2-process rerun ends on
    the bits of an uninterrupted 2-process run."""
    root = experiment.parent
    reference = _two_processes(experiment, root / "two_whole")
    errors = [p.communicate(timeout=300)[1] for p in reference]
    assert [p.returncode for p in reference] == [0, 0], errors[0][-3000:]
    workdir = root / "two"
    processes = _two_processes(experiment, workdir, "--config.step_seconds=1.0")
    metrics = workdir / "classifier" / "metrics.jsonl"
    deadline = time.monotonic() + 180
    while not (metrics.exists() and metrics.read_text().strip()):
        assert all(p.poll() is None for p in processes) and time.monotonic() < deadline
        time.sleep(0.1)
    processes[1].send_signal(signal.SIGTERM)
    stderr = [p.communicate(timeout=120)[1] for p in processes]
    assert [p.returncode for p in processes] == [143, 143], stderr[0][-3000:] + stderr[1][-3000:]
    steps = {int(re.search(r"checkpoint saved at step (\d+)", e).group(1)) for e in stderr}
    assert len(steps) == 1 and _checkpoint_steps(workdir)[-1] == steps.pop() < 24
    resumed = _two_processes(experiment, workdir)
    errors = [p.communicate(timeout=300)[1] for p in resumed]
    assert [p.returncode for p in resumed] == [0, 0], errors[0][-3000:]
    step, resumed_params = _params_on_one_device(workdir)
    reference_step, reference_params = _params_on_one_device(root / "two_whole")
    assert step == reference_step == 24
    for a, b in zip(jax_leaves(reference_params), jax_leaves(resumed_params)):
        np.testing.assert_array_equal(a, b)
