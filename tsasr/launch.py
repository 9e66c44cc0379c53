"""`python -m tsasr.launch EXPERIMENT.py --target {slurm,tpu} --workdir DIR [...]`: run on many hosts.

`--target slurm` prints an sbatch script: one task per node, each `python -m tsasr.run ...
--distributed` driving all GPUs of its node; SIGTERM reaches the runs TERM_BEFORE_LIMIT_S
before the time limit (and on preemption), they checkpoint and exit 143, and the script requeues
the job, which resumes from that checkpoint; `--submit` hands it to sbatch when sbatch is on
the PATH and prints the job id. `--target tpu` prints
the whole life of a Cloud TPU VM job as steps to paste: create the VM, ship the checkout to
every worker and install it, run on all workers, collect the report, delete the VM. A
`gs://BUCKET/PATH` workdir is mounted on every worker with gcsfuse and the run writes through
the mount (tsasr.run reads and writes its workdir as files: tsasr.workdir.LOCAL_ONLY says why).
jax.distributed.initialize() finds the coordinator, process count and process id by itself
on TPU VMs and under SLURM. tests/test_launch.py executes what this prints, under stand-ins
for sbatch, srun and gcloud (tests/fake_cluster.py).
"""

from __future__ import annotations

import argparse
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

from tsasr import run as run_lib  # imports no JAX and no Kaldi wheel (tests/test_imports.py)
from tsasr import workdir as wd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout launch runs from
GCLOUD = "gcloud compute tpus tpu-vm"
# A Python tsasr supports (pyproject: >=3.11) whatever the TPU image ships (22.04: 3.10), and libtpu for jax.
TPU_INSTALL = (
    "curl -LsSf https://astral.sh/uv/install.sh | sh"
    " && ~/.local/bin/uv venv --python 3.11 .venv"
    " && ~/.local/bin/uv pip install --python .venv/bin/python -e . 'jax[tpu]>=0.10,<0.11'"
)
TPU_SETUP = "source .venv/bin/activate"  # the environment TPU_INSTALL makes
TERM_BEFORE_LIMIT_S = 120  # SLURM: time for the step in flight and a checkpoint before the limit
# gcsfuse from Google's apt repository, as its install guide gives it (TPU VM images lack it).
GCSFUSE_INSTALL = (
    'echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt'
    ' gcsfuse-$(lsb_release -c -s) main" | sudo tee /etc/apt/sources.list.d/gcsfuse.list'
    " && curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg"
    " | sudo tee /usr/share/keyrings/cloud.google.asc > /dev/null"
    " && sudo apt-get update -q && sudo apt-get install -y -q gcsfuse"
)
# --implicit-dirs: see directories no one created as objects; --rename-dir-limit: orbax renames a
# finished checkpoint's directory into place, and a superseded model's directory is moved aside;
# --metadata-cache-ttl-secs=0: a host sees the files another host has just written.
GCSFUSE_FLAGS = ("--implicit-dirs", "--rename-dir-limit=1000000", "--metadata-cache-ttl-secs=0")


def q(value) -> str:
    return shlex.quote(str(value))


def shell(args: list[str]) -> str:
    """One command line: every argument quoted once."""
    return " ".join(map(q, args))


def run_args(experiment: str, workdir: str, tiny: bool, until: str | None, overrides: list[str]) -> list[str]:
    """The runner's argv on every host."""
    args = ["python", "-m", "tsasr.run", experiment, "--workdir", workdir, "--distributed"]
    return args + (["--tiny"] if tiny else []) + (["--until", until] if until else []) + overrides


def _sbatch_value(value: str) -> str:
    # sbatch reads an #SBATCH value up to whitespace; double quotes group, backslash escapes.
    if re.fullmatch(r"[\w@%+=:,./-]+", value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sbatch_script(
    experiment: str,
    *,
    name: str,
    nodes: int,
    gpus_per_node: int,
    partition: str,
    hours: int,
    workdir: str,
    repo_dir: str,
    setup: str,
    tiny: bool,
    until: str | None,
    overrides: list[str],
) -> str:
    """An sbatch script: one task (one JAX process) per node. Paths are absolute: the job
    starts on another host, in another directory."""
    log = workdir.replace("%", "%%") + "/slurm-%x-%j.out"  # %x the job name, %j its id
    lines = [
        "#!/bin/bash",
        f"# submit: mkdir -p {q(workdir)} && sbatch THIS_FILE (SLURM opens the log there before the job starts)",
        f"#SBATCH --job-name={_sbatch_value(name)}",
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={gpus_per_node}",
        f"#SBATCH --time={hours}:00:00",
        f"#SBATCH --output={_sbatch_value(log)}",
        # SIGTERM to the job's tasks before the time limit (SLURM sends it on preemption too):
        # training saves a checkpoint and exits 143 (tsasr.train.preemption), the job is requeued.
        f"#SBATCH --signal=TERM@{TERM_BEFORE_LIMIT_S}",
        "#SBATCH --requeue",
        "#SBATCH --open-mode=append",  # a requeued job adds to its log
    ]
    if partition:
        lines.append(f"#SBATCH --partition={_sbatch_value(partition)}")
    # No `set -u`: environment activation scripts (conda's, module's) read unset variables.
    lines += ["set -eo pipefail", f"cd {q(repo_dir)}"]
    if setup:
        lines.append(setup)
    lines += [
        "# one process per node drives all its GPUs: under SLURM, jax.distributed.initialize()",
        "# would otherwise give each process only GPU SLURM_LOCALID (one process per GPU)",
        f"export JAX_LOCAL_DEVICE_IDS={','.join(map(str, range(gpus_per_node)))}",
    ]
    lines += [
        f"srun {shell(run_args(experiment, workdir, tiny, until, overrides))} || status=$?",
        "# 143: preempted or near the time limit, after a checkpoint: queue again to resume from it",
        'if [ "${status:-0}" = 143 ]; then scontrol requeue "$SLURM_JOB_ID"; fi',
        'exit "${status:-0}"',
    ]
    return "\n".join(lines) + "\n"


def tpu_steps(
    experiment: str,
    *,
    name: str,
    zone: str,
    accelerator_type: str,
    version: str,
    workdir: str,
    repo_dir: str,
    setup: str,
    install: str,
    tiny: bool,
    until: str | None,
    overrides: list[str],
    bucket: str = "",
    gcsfuse_install: str = GCSFUSE_INSTALL,
) -> str:
    """The life of a TPU VM job, one paste-able shell line per command, `#` lines between.

    Remote commands start in the worker's home, so a relative `repo_dir` lives there. Files
    cross gcloud's scp under fixed plain names: scp's remote-path quoting varies by version.
    With `bucket`, `workdir` lies under the mount point `mount_point(bucket)`, which step 2
    mounts with gcsfuse on every worker.
    """
    where = f"--zone={q(zone)}"

    def ssh(worker: str, command: str) -> str:
        return f"{GCLOUD} ssh {q(name)} {where} --worker={worker} --command={q(command)}"

    archive = os.path.join(tempfile.gettempdir(), f"tsasr-{name}.tar.gz")
    results = os.path.join(tempfile.gettempdir(), f"tsasr-{name}-results.tgz")
    run_prefix = f"cd {q(repo_dir)} && " + (f"{setup} && " if setup else "")
    lines = [
        "# 1. create the TPU VM: one worker per host of the slice",
        f"{GCLOUD} create {q(name)} {where} --accelerator-type={q(accelerator_type)} --version={q(version)}",
    ]
    if bucket:
        mount = mount_point(bucket)
        gcsfuse = shell(["gcsfuse", *GCSFUSE_FLAGS, bucket, mount])
        lines += [
            f"# 2. mount gs://{bucket} at {mount} on every worker (gcsfuse; the VM's service account needs access)",
            ssh("all", f'{gcsfuse_install} && sudo mkdir -p {q(mount)} && sudo chown "$USER" {q(mount)} && {gcsfuse}'),
        ]
    else:
        lines += [
            f"# 2. {workdir} must be a filesystem every worker mounts (Filestore NFS, a gcsfuse bucket): mount it",
            "#    on all workers now, e.g. "
            + ssh("all", f"sudo mkdir -p {q(workdir)} && sudo mount NFS_IP:/SHARE {q(workdir)}"),
        ]
    lines += [
        "# 3. ship this checkout's HEAD (commit first: uncommitted changes stay here) and install it on every worker",
        f"git -C {q(ROOT)} archive --format=tar.gz -o {q(archive)} HEAD",
        f"{GCLOUD} scp {q(archive)} {q(name + ':tsasr.tar.gz')} {where} --worker=all",
        ssh(
            "all", f"mkdir -p {q(repo_dir)} && tar -xzf tsasr.tar.gz -C {q(repo_dir)} && cd {q(repo_dir)} && {install}"
        ),
        "# 4. run: every worker runs the same command; jax.distributed.initialize() finds its peers",
    ]
    local = os.path.basename(workdir)  # under the directory the steps are pasted in
    report = ["results.json", "results.md", "config.json", "plots"]
    lines += [
        ssh("all", run_prefix + shell(run_args(experiment, workdir, tiny, until, overrides))),
        "# 5. collect the report from worker 0 (the other outputs stay on the shared filesystem)",
        ssh("0", f"tar -czf tsasr-results.tgz --ignore-failed-read -C {q(workdir)} {shell(report)}"),
        f"{GCLOUD} scp {q(name + ':tsasr-results.tgz')} {q(results)} {where} --worker=0",
        f"mkdir -p {q(local)} && tar -xzf {q(results)} -C {q(local)}",
    ]
    lines += ["# 6. delete the VM: it bills until deleted", f"{GCLOUD} delete {q(name)} {where} --quiet"]
    return "\n".join(lines) + "\n"


def mount_point(bucket: str) -> str:
    """Where a gs:// workdir's bucket is mounted on every TPU worker."""
    return f"/mnt/gcs/{bucket}"


def submit(script: str, workdir: str, name: str) -> int:
    """sbatch the script when sbatch is here; otherwise print it."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        print("# sbatch is not on the PATH: the script follows; run it with sbatch on the cluster", file=sys.stderr)
        print(script, end="")
        return 0
    os.makedirs(workdir, exist_ok=True)  # SLURM opens the log there before the script runs
    path = os.path.join(workdir, f"slurm-{name}.sh")  # what was submitted, beside its outputs
    with open(path, "w") as f:
        f.write(script)
    done = subprocess.run([sbatch, "--parsable", path], check=False, capture_output=True, text=True)
    if done.returncode:
        print(f"error: sbatch {path} failed: {done.stderr.strip()}", file=sys.stderr)
        return done.returncode
    print(f"submitted batch job {done.stdout.strip().split(';')[0]} ({path})")
    return 0


def _refuse(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tsasr.launch", description=__doc__.splitlines()[0])
    parser.add_argument("experiment")
    parser.add_argument("--target", choices=("tpu", "slurm"), required=True)
    parser.add_argument(
        "--workdir",
        required=True,
        help="output directory on a filesystem every host mounts; tpu: or gs://BUCKET/PATH, mounted with gcsfuse",
    )
    parser.add_argument(
        "--repo-dir",
        help="slurm: the checkout on the shared filesystem (default: this one); "
        "tpu: where the code goes on each worker, relative to its home (default: tsasr)",
    )
    parser.add_argument(
        "--setup", help=f"shell command run before the runner on every host (tpu default: {TPU_SETUP!r})"
    )
    parser.add_argument("--per-point", action="store_true", help="refused: see the message")
    parser.add_argument("--tiny", action="store_true", help="pass --tiny to the runner")
    parser.add_argument("--until", help="pass --until STAGE to the runner")
    parser.add_argument("--name", default="tsasr", help="TPU VM name, or SLURM job name")
    tpu = parser.add_argument_group("tpu")
    tpu.add_argument("--zone", default="us-central2-b")
    tpu.add_argument("--accelerator-type", default="v4-32", help="slice, e.g. v4-32 (4 hosts), v5p-64")
    tpu.add_argument("--version", default="tpu-ubuntu2204-base", help="TPU VM runtime (software) version")
    tpu.add_argument("--install", default=TPU_INSTALL, help="run in the shipped checkout on every worker")
    tpu.add_argument("--gcsfuse-install", default=GCSFUSE_INSTALL, help="installs gcsfuse on a worker (gs:// workdir)")
    slurm = parser.add_argument_group("slurm")
    slurm.add_argument("--nodes", type=int, default=1)
    slurm.add_argument("--gpus-per-node", type=int, default=8)
    slurm.add_argument("--partition", default="")
    slurm.add_argument("--hours", type=int, default=24)
    slurm.add_argument("--submit", action="store_true", help="sbatch the script (when sbatch is on the PATH)")
    args, overrides = parser.parse_known_args(argv)
    bad = [a for a in overrides if not a.startswith("--config.")]
    if bad:
        parser.error(f"unrecognised arguments: {' '.join(bad)}")
    bucket = ""
    if wd.is_uri(args.workdir):
        scheme, _, rest = args.workdir.partition("://")
        bucket, _, inside = rest.partition("/")
        if args.target != "tpu" or scheme != "gs" or not bucket:
            # A SLURM cluster's shared filesystem, or its admins' gcsfuse mount, is a path already.
            return _refuse(f"--workdir {args.workdir}: {wd.LOCAL_ONLY.replace('every host', 'every node')}")
        args.workdir = posixpath.join(mount_point(bucket), inside)
    # Fail here, not on the cluster: a typo in an override, an unknown stage, a sweep that is not there.
    config, recipe = run_lib.load(args.experiment, args.tiny, overrides)
    stages = [s.name for s in recipe.stages(config)]
    if args.until and args.until not in stages:
        parser.error(f"--until {args.until!r} is not a stage of recipe {recipe.name!r}: {', '.join(stages)}")
    if args.per_point:
        # The runner trains an experiment's whole sweep() in one vmapped job and has no flag for
        # one point, and a point's fields (top_k) are the recipe's, not config paths.
        return _refuse("--per-point: tsasr.run cannot run one sweep point; launch the experiment as one job")

    experiment = os.path.abspath(args.experiment)
    if args.target == "slurm":
        # `~` and relative paths resolve here, on the submitting host, which shares the filesystem.
        workdir = os.path.abspath(os.path.expanduser(args.workdir))
        repo_dir = os.path.abspath(os.path.expanduser(args.repo_dir or ROOT))
        script = sbatch_script(
            experiment,
            name=args.name,
            nodes=args.nodes,
            gpus_per_node=args.gpus_per_node,
            partition=args.partition,
            hours=args.hours,
            workdir=workdir,
            repo_dir=repo_dir,
            setup=args.setup or "",
            tiny=args.tiny,
            until=args.until,
            overrides=overrides,
        )
        if args.submit:
            return submit(script, workdir, args.name)
        print(script, end="")
        return 0

    # TPU: paths on the workers. This host's home is not theirs; a relative path starts at theirs.
    if not os.path.isabs(args.workdir):
        return _refuse(f"--workdir {args.workdir}: give the absolute path of the mount every worker shares")
    repo_dir = args.repo_dir or "tsasr"
    if repo_dir == "~" or repo_dir.startswith("~/"):
        repo_dir = repo_dir[2:] or "."
    relative = os.path.relpath(experiment, ROOT)
    if relative.startswith(".."):
        return _refuse(f"{args.experiment} is outside {ROOT}: the TPU steps ship that checkout; commit it there")
    print(
        tpu_steps(
            relative,
            name=args.name,
            zone=args.zone,
            accelerator_type=args.accelerator_type,
            version=args.version,
            workdir=args.workdir.rstrip("/"),
            repo_dir=repo_dir,
            setup=TPU_SETUP if args.setup is None else args.setup,
            install=args.install,
            tiny=args.tiny,
            until=args.until,
            overrides=overrides,
            bucket=bucket,
            gcsfuse_install=args.gcsfuse_install,
        ),
        end="",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
