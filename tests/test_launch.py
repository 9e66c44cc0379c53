"""tsasr.launch: what it prints is executed, under the stand-ins of tests/fake_cluster.py.

The SLURM script runs through a stand-in sbatch and srun (2 local processes with the SLURM
variables jax.distributed.initialize() reads); the TPU run command runs on 2 stand-in
workers with the coordinator given explicitly; both finish the tiny recipe on a shared
directory with the WERs of a one-process run. Paths with spaces and quotes reach the
runner intact. What only a real cluster shows (gcloud, sbatch's own parsing, GPUs, TPUs)
is listed in README.md, "Run on a cluster".
"""

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest

from tsasr import launch

from conftest import EXPERIMENT, ROOT

FAKE = ROOT / "tests" / "fake_cluster.py"
# The tiny recipe up to the teacher's first evaluation, shortened: what a cluster run does, in
# ~15 s. 60 steps (the tiny default) cost about what 8 do, and the teacher then transcribes
# some words (WER ~96 %, not the 100 % of an untrained one), so equal WERs mean something.
UNTIL = "decode_teacher_ce"
SHORT = [
    "--config.teacher.train.num_steps=60",
    "--config.teacher.train.checkpoint_every=60",
    "--config.decode.conditions=('clean',)",
    "--config.decode.bootstrap_replications=20",
    "--config.hmm.gmm_baseline=false",
]


def _launch(monkeypatch, capsys, env, *argv) -> tuple[int, str, str]:
    """launch.main in this process, with `env`'s PATH and a temp dir of the test's."""
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.setattr(tempfile, "tempdir", env["TMPDIR"])
    code = launch.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _stand_ins(tmp_path, record_python=False) -> dict:
    """An environment whose PATH starts with the stand-ins (and `python` recording its argv)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("sbatch", "srun", "gcloud") + (("python",) if record_python else ()):
        wrapper = bin_dir / name
        wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(FAKE))} {name} "$@"\n')
        wrapper.chmod(0o755)
    (tmp_path / "tmp").mkdir()
    return dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", TMPDIR=str(tmp_path / "tmp"))


def _setup_this_python() -> str:
    """--setup for hosts: put this interpreter's environment first, as activating a venv does."""
    return f"export TSASR_SETUP=done PATH={shlex.quote(os.path.dirname(sys.executable))}:$PATH"


def _prepared_workdir(tiny_run, path):
    """A copy of the session's tiny workdir (corpus, noise, noisy data made)."""
    shutil.copytree(tiny_run[0], path)
    return path


def _port_for_slurm() -> int:
    """A free port among those jax derives from a SLURM job id (61440 + id % 4096)."""
    for port in range(61440 + os.getpid() % 4000, 65536):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port in 61440-65535")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _outcome(workdir) -> dict:
    """WERs, the words decoded, and the training losses of a run."""
    results = json.loads((workdir / "results.json").read_text())["systems"]["teacher_ce"]
    metrics = (workdir / "teacher_ce" / "metrics.jsonl").read_text().splitlines()
    return {
        "wer": results["wer"],
        "words": json.loads((workdir / "decode" / "teacher_ce" / "clean.json").read_text()),
        "loss": [row["loss"] for row in map(json.loads, metrics) if "loss" in row],  # not the dev lines
    }


def _assert_same_outcome(workdir, reference):
    """Same data, same math: the WERs and the words equal the one-process run's. The losses agree
    to float rounding only: the gradient is reduced over 2 devices instead of 1, in another order."""
    outcome = _outcome(workdir)
    assert outcome["wer"] == reference["wer"] and outcome["words"] == reference["words"]
    assert outcome["loss"] == pytest.approx(reference["loss"], rel=1e-5)


@pytest.fixture(scope="module")
def one_process(tiny_run, tmp_path_factory):
    """The reference: the same runner command in one process, no distribution; its workdir."""
    workdir = _prepared_workdir(tiny_run, tmp_path_factory.mktemp("one") / "work")
    command = [sys.executable, "-m", "tsasr.run", str(EXPERIMENT), "--workdir", str(workdir), "--tiny"]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
    done = subprocess.run(
        command + ["--until", UNTIL, *SHORT],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return _outcome(workdir), workdir


def _shared_workdir(one_process, path):
    """The reference's workdir up to the teacher: its alignment and graph are reused, the
    teacher, its decoding and the results are made again by the run under test."""
    shutil.copytree(one_process[1], path, ignore=shutil.ignore_patterns("teacher_ce", "decode", "results.*"))
    for marker in (path / ".stages").glob("*"):
        if marker.name.startswith(("teacher_ce", "decode_")):
            marker.unlink()
    return path


def test_slurm_script_runs_on_two_nodes(tmp_path, monkeypatch, capsys, one_process):
    """--submit: sbatch runs the script, srun starts 2 processes that find each other through SLURM's variables."""
    env = _stand_ins(tmp_path)
    workdir = _shared_workdir(one_process, tmp_path / "shared" / "run")
    job_id = _port_for_slurm() - 61440  # jax's SLURM coordinator port is 61440 + job id % 4096
    monkeypatch.setenv("FAKE_SLURM_JOB_ID", str(job_id))
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    code, out, _ = _launch(
        monkeypatch, capsys, env, EXPERIMENT, "--target", "slurm", "--nodes", "2", "--gpus-per-node", "1",
        "--workdir", workdir, "--setup", _setup_this_python(), "--submit", "--tiny", "--until", UNTIL, *SHORT,
    )  # fmt: skip
    log = (workdir / f"slurm-tsasr-{job_id}.out").read_text()
    assert code == 0, log[-4000:]
    assert out == f"submitted batch job {job_id} ({workdir / 'slurm-tsasr.sh'})\n"
    assert "on 2 devices" in log  # one global mesh over both processes
    _assert_same_outcome(workdir, one_process[0])


def test_tpu_run_command_on_two_workers(tmp_path, monkeypatch, capsys, one_process):
    """Step 4 of the TPU steps, run by 2 stand-in workers on a shared workdir."""
    env = _stand_ins(tmp_path)
    workdir = _shared_workdir(one_process, tmp_path / "shared" / "run")
    code, out, _ = _launch(
        monkeypatch, capsys, env, EXPERIMENT, "--target", "tpu", "--workdir", workdir,
        "--setup", _setup_this_python(), "--tiny", "--until", UNTIL, *SHORT,
    )  # fmt: skip
    assert code == 0
    (run_line,) = [line for line in out.splitlines() if " -m tsasr.run " in line]
    for i in range(2):  # the code, installed in each worker's home (step 3 is tested below)
        (tmp_path / "pod" / f"worker{i}").mkdir(parents=True)
        (tmp_path / "pod" / f"worker{i}" / "tsasr").symlink_to(ROOT)
    env.update(
        FAKE_TPU_HOME=str(tmp_path / "pod"),
        FAKE_TPU_WORKERS="2",
        FAKE_TPU_COORDINATOR=f"127.0.0.1:{_free_port()}",
        XLA_FLAGS="--xla_force_host_platform_device_count=1",
        JAX_PLATFORMS="cpu",
    )
    done = subprocess.run(["bash", "-c", run_line], check=False, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "on 2 devices" in done.stdout + done.stderr
    _assert_same_outcome(workdir, one_process[0])


ODD = 'it\'s a "quoted" $HOME `dir` * with spaces'  # what a shell would split, expand or glob


def test_slurm_arguments_arrive_intact(tmp_path, monkeypatch, capsys):
    """Repo dir, experiment, workdir and overrides with spaces and quotes reach the runner as given."""
    env = _stand_ins(tmp_path, record_python=True)
    repo, workdir = tmp_path / f"repo {ODD}", tmp_path / f"work {ODD}"
    experiment = repo / "experiments" / "top 20.py"
    experiment.parent.mkdir(parents=True)
    shutil.copy(EXPERIMENT, experiment)
    override = "--config.decode.conditions=('clean', 'noisy')"
    code, out, _ = _launch(
        monkeypatch, capsys, env, experiment, "--target", "slurm", "--nodes", "1", "--repo-dir", repo,
        "--workdir", workdir, "--setup", "export TSASR_SETUP=done", "--submit", override,
    )  # fmt: skip
    assert code == 0 and out.startswith("submitted batch job 4242"), out
    seen = json.loads((workdir / "results.json").read_text())
    assert seen["argv"] == ["-m", "tsasr.run", str(experiment), "--workdir", str(workdir), "--distributed", override]
    assert seen["cwd"] == str(repo) and seen["experiment_here"]
    assert seen["env"] == {"TSASR_SETUP": "done", "JAX_LOCAL_DEVICE_IDS": "0,1,2,3,4,5,6,7", "SLURM_PROCID": "0"}
    assert (workdir / "slurm-tsasr-4242.out").exists()  # the #SBATCH --output path, quoted for sbatch


# The stand-in install: an environment whose activation the default --setup sources.
INSTALL = "mkdir -p .venv/bin && echo 'export TSASR_SETUP=venv' > .venv/bin/activate"


def test_tpu_steps_run_from_create_to_delete(tmp_path, monkeypatch, capsys):
    """Every printed TPU line, pasted into bash: the code reaches both workers, the run's argv
    arrives intact, the report comes back, the VM is deleted."""
    env = _stand_ins(tmp_path, record_python=True)
    env.update(FAKE_TPU_HOME=str(tmp_path / "pod"), FAKE_TPU_WORKERS="2")
    workdir = tmp_path / "shared" / f"run {ODD}"
    code, out, _ = _launch(
        monkeypatch, capsys, env, EXPERIMENT, "--target", "tpu", "--name", "pod-1", "--zone", "europe-west4-a",
        "--accelerator-type", "v5p-16", "--version", "v2-alpha-tpuv5", "--repo-dir", f"~/code {ODD}",
        "--workdir", workdir, "--install", INSTALL, "--config.student.top_k=40",
    )  # fmt: skip
    assert code == 0
    local = tmp_path / "here"
    local.mkdir()
    done = subprocess.run(
        ["bash", "-e", "-c", out], check=False, cwd=local, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    calls = [json.loads(line) for line in (tmp_path / "pod" / "calls.jsonl").read_text().splitlines()]
    assert calls[0] == [
        "create",
        ["pod-1"],
        {"--zone": "europe-west4-a", "--accelerator-type": "v5p-16", "--version": "v2-alpha-tpuv5"},
    ]
    assert calls[-1] == ["delete", ["pod-1"], {"--zone": "europe-west4-a", "--quiet": ""}]
    for i in range(2):
        code_dir = tmp_path / "pod" / f"worker{i}" / f"code {ODD}"
        assert (code_dir / ".venv" / "bin" / "activate").exists() and (code_dir / "tsasr" / "launch.py").exists()
    seen = json.loads((local / workdir.name / "results.json").read_text())  # collected from worker 0
    assert seen["argv"] == [
        "-m", "tsasr.run", "experiments/top20_T2.py", "--workdir", str(workdir), "--distributed",
        "--config.student.top_k=40",
    ]  # fmt: skip
    homes = [str(tmp_path / "pod" / f"worker{i}" / f"code {ODD}") for i in range(2)]
    assert seen["cwd"] in homes and seen["experiment_here"]  # the shipped checkout (HEAD) holds the experiment
    assert seen["env"]["TSASR_SETUP"] == "venv"  # the default --setup activated what the install made


def test_slurm_script_without_sbatch_and_its_paths(tmp_path, monkeypatch, capsys):
    env = dict(os.environ, PATH="/usr/bin:/bin", TMPDIR=str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    code, script, err = _launch(
        monkeypatch, capsys, env, EXPERIMENT, "--target", "slurm", "--nodes", "4", "--gpus-per-node", "8",
        "--partition", "gpu", "--workdir", "~/runs/top20", "--repo-dir", "~/tsasr", "--submit",
        "--setup", "source .venv/bin/activate",
    )  # fmt: skip
    assert code == 0 and "sbatch is not on the PATH" in err
    home = tmp_path / "home"
    for line in (
        "#SBATCH --nodes=4",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --partition=gpu",
        f"#SBATCH --output={home}/runs/top20/slurm-%x-%j.out",  # a single job: %j, no array index
        f"cd {home}/tsasr",  # `~` expanded where launch runs, not quoted into the script
        "source .venv/bin/activate",
        "export JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7",
        f"srun python -m tsasr.run {EXPERIMENT} --workdir {home}/runs/top20 --distributed || status=$?",
        "#SBATCH --signal=TERM@120",  # SIGTERM before the time limit: a checkpoint, then a requeue
        "#SBATCH --requeue",
        "#SBATCH --open-mode=append",
    ):
        assert line in script.splitlines(), line
    lines = script.splitlines()
    assert lines.index(f"cd {home}/tsasr") < lines.index("source .venv/bin/activate") < len(lines) - 1
    assert subprocess.run(["bash", "-n"], check=False, input=script, text=True).returncode == 0


@pytest.mark.parametrize("srun_exit, requeued", [(143, True), (0, False), (1, False)])
def test_slurm_script_requeues_a_preempted_run(tmp_path, monkeypatch, capsys, srun_exit, requeued):
    """The runner's exit 143 (SIGTERM: checkpoint saved, tsasr.train.preemption) requeues the job,
    which resumes from that checkpoint; success and errors end it with their exit code."""
    code, script, _ = _launch(
        monkeypatch, capsys, dict(os.environ, TMPDIR=str(tmp_path)), EXPERIMENT, "--target", "slurm",
        "--workdir", tmp_path / "work",
    )  # fmt: skip
    assert code == 0
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("srun", f"exit {srun_exit}"), ("scontrol", f'echo "$@" >> {tmp_path}/scontrol.txt')):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", SLURM_JOB_ID="77")
    done = subprocess.run(["bash", "-c", script], check=False, env=env, capture_output=True, text=True)
    assert done.returncode == srun_exit, done.stderr
    calls = (tmp_path / "scontrol.txt").read_text() if (tmp_path / "scontrol.txt").exists() else ""
    assert calls == ("requeue 77\n" if requeued else "")


def test_tpu_steps_mount_a_bucket_workdir(tmp_path, monkeypatch, capsys):
    """--workdir gs://BUCKET/PATH on a TPU: step 2 mounts the bucket with gcsfuse on every worker and
    the run writes under the mount (tsasr.run refuses a gs:// workdir itself). Every printed line
    runs against stand-ins: gcsfuse (records its argv; the mount point is one local directory both
    stand-in workers share, as a mount would make it) and sudo."""
    env = _stand_ins(tmp_path, record_python=True)
    env.update(FAKE_TPU_HOME=str(tmp_path / "pod"), FAKE_TPU_WORKERS="2")
    for name, body in (
        ("sudo", 'exec "$@"'),
        ("gcsfuse", f'echo "$@" >> {shlex.quote(str(tmp_path / "gcsfuse.txt"))}'),
    ):
        (tmp_path / "bin" / name).write_text(f"#!/bin/sh\n{body}\n")
        (tmp_path / "bin" / name).chmod(0o755)
    mount = tmp_path / "mnt" / "my-bucket"
    monkeypatch.setattr(launch, "mount_point", lambda bucket: str(tmp_path / "mnt" / bucket))
    code, out, _ = _launch(
        monkeypatch, capsys, env, EXPERIMENT, "--target", "tpu", "--workdir", "gs://my-bucket/runs/top20",
        "--install", INSTALL, "--gcsfuse-install", "echo installed >> gcsfuse-installed",
    )  # fmt: skip
    assert code == 0 and "gs://" not in out.split("# 3.")[1]  # only the mount step names the bucket by URI
    local = tmp_path / "here"
    local.mkdir()
    done = subprocess.run(
        ["bash", "-e", "-c", out], check=False, cwd=local, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    flags = " ".join(launch.GCSFUSE_FLAGS)
    assert (tmp_path / "gcsfuse.txt").read_text() == f"{flags} my-bucket {mount}\n" * 2  # on both workers
    for i in range(2):
        assert (tmp_path / "pod" / f"worker{i}" / "gcsfuse-installed").exists()
    seen = json.loads((local / "top20" / "results.json").read_text())  # collected from the mount on worker 0
    assert seen["argv"][seen["argv"].index("--workdir") + 1] == str(mount / "runs" / "top20")


@pytest.mark.parametrize("target", ["slurm", "tpu"])
def test_refusals(target, capsys):
    refused = ["s3://bucket/run"] + (["gs://bucket/run"] if target == "slurm" else [])
    for workdir in refused:  # a TPU job mounts a gs:// bucket itself (test above)
        assert launch.main([str(EXPERIMENT), "--target", target, "--workdir", workdir]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and "gcsfuse" in err and "Filestore" in err
    assert launch.main([str(EXPERIMENT), "--target", target, "--workdir", "/w", "--per-point"]) == 2
    assert "one sweep point" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        launch.main([str(EXPERIMENT), "--target", target, "--workdir", "/w", "--until", "decode_teacher"])
    assert "is not a stage" in capsys.readouterr().err


def test_tpu_workdir_must_be_absolute(capsys):
    assert launch.main([str(EXPERIMENT), "--target", "tpu", "--workdir", "runs/x"]) == 2
    assert "absolute path" in capsys.readouterr().err


def test_typo_fails_before_anything_is_launched():
    with pytest.raises(KeyError, match="student.top_kk"):
        launch.main([str(EXPERIMENT), "--target", "tpu", "--workdir", "/x", "--config.student.top_kk=3"])
