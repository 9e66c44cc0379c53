"""Subprocess runs of the synthetic CLI (tsasr/train/synthetic.py).

Resume: a run killed with SIGKILL mid-way and restarted reaches bit for bit the params
of an uninterrupted run. Multi-process: 2 processes x 2 CPU devices (gloo collectives,
coordinator on 127.0.0.1) give the losses of 1 process x 4 devices.
"""

import os
import signal
import socket
import subprocess
import sys

import numpy as np

from tsasr.train import metrics


def spawn(workdir, devices, *args):
    # The runs of a test compile the same step: a shared persistent compilation cache
    # lets later ones skip XLA (the executable, hence the bits, is the same).
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_COMPILATION_CACHE_DIR=str(workdir.parent / "jax_cache"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    )
    command = [sys.executable, "-m", "tsasr.train.synthetic", "--workdir", str(workdir), *map(str, args)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process, timeout=240):
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigkilled_run_resumes_bit_for_bit(tmp_path):
    common = ("--model", "lstm", "--steps", 30, "--checkpoint-every", 5)
    whole = spawn(tmp_path / "whole", 2, *common)
    # Killed right after dispatching step 17 (while the step-15 checkpoint may still be
    # being written): the restart must redo steps 15.. or 10.. and land on the same bits.
    killed = spawn(tmp_path / "killed", 2, *common, "--sigkill-at-step", 17)
    code, output = finish(killed)
    assert code == -signal.SIGKILL, output
    assert not (tmp_path / "killed" / "final_params.npz").exists()
    logged_before_kill = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    resumed = spawn(tmp_path / "killed", 2, *common)
    for process in (whole, resumed):
        code, output = finish(process)
        assert code == 0, output
    expected = np.load(tmp_path / "whole" / "final_params.npz")
    got = np.load(tmp_path / "killed" / "final_params.npz")
    assert sorted(expected.files) == sorted(got.files)
    for name in expected.files:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    # Every step is logged once, in order: the steps the restart redid after its checkpoint
    # replaced the killed run's lines. It really resumed (did not start over): the lines up to
    # its checkpoint (step 10 or 15) are the killed run's own, frames_per_s and all.
    lines = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    steps = [r["step"] for r in metrics.read(str(tmp_path / "killed"))]
    assert steps == [r["step"] for r in metrics.read(str(tmp_path / "whole"))] == list(range(1, 31))
    assert len(logged_before_kill) >= 10 and lines[:10] == logged_before_kill[:10]


def test_two_processes_match_one_process(tmp_path):
    common = ("--model", "tdnn", "--steps", 8, "--checkpoint-every", 4)
    single = spawn(tmp_path / "single", 4, *common)
    coordinator = f"127.0.0.1:{free_port()}"
    workers = [
        spawn(tmp_path / "multi", 2, *common, "--coordinator", coordinator, "--num-processes", 2, "--process-id", i)
        for i in range(2)
    ]
    for process in (single, *workers):
        code, output = finish(process)
        assert code == 0, output
    single_losses = [r["loss"] for r in metrics.read(str(tmp_path / "single"))]
    multi_losses = [r["loss"] for r in metrics.read(str(tmp_path / "multi"))]
    assert len(single_losses) == len(multi_losses) == 8
    # Same data and math; only the order of the cross-device reduction differs.
    np.testing.assert_allclose(multi_losses, single_losses, rtol=1e-5)
    expected = np.load(tmp_path / "single" / "final_params.npz")
    got = np.load(tmp_path / "multi" / "final_params.npz")
    for name in expected.files:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-4, atol=1e-6)
