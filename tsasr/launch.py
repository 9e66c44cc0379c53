"""`python -m tsasr.launch EXPERIMENT.py --target {tpu,slurm} [...]`: commands for many hosts.

Renders, from an experiment file, what to run on a Cloud TPU VM pod (one `gcloud compute
tpus tpu-vm ssh --worker=all` command) or a SLURM GPU cluster (an sbatch script), either
one job for the whole experiment or, for an experiment with a `sweep()`, one job per
sweep point. It prints; it starts nothing. On the hosts, `python -m tsasr.run ...
--distributed` calls jax.distributed.initialize(), which finds the coordinator, process
count and process id by itself on TPU VMs and under SLURM.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from tsasr import config as config_lib


def run_command(experiment: str, workdir: str, overrides: list[str], quoted_workdir: str | None = None) -> str:
    """The command every host runs; `quoted_workdir` passes a shell expression through as is."""
    return " ".join(
        [
            "python",
            "-m",
            "tsasr.run",
            shlex.quote(experiment),
            "--workdir",
            quoted_workdir or shlex.quote(workdir),
            "--distributed",
            *map(shlex.quote, overrides),
        ]
    )


def sweep_points(experiment: str) -> list[dict]:
    module = config_lib.load_experiment(experiment)
    return list(module.sweep()) if hasattr(module, "sweep") else []


def _point_overrides(point: dict) -> list[str]:
    return [f"--config.{k}={v}" for k, v in sorted(point.items())]


def _point_name(point: dict) -> str:
    return "_".join(
        f"{k.split('.')[-1]}{v:g}" if isinstance(v, float) else f"{k.split('.')[-1]}{v}"
        for k, v in sorted(point.items())
    )


def tpu_commands(
    experiment: str, name: str, zone: str, workdir: str, repo_dir: str, per_point: bool, overrides: list[str]
) -> list[str]:
    """One `gcloud ... ssh --worker=all` per job: every worker of the pod runs the same command."""
    jobs = [(workdir, overrides)]
    if per_point:
        jobs = [(f"{workdir}/{_point_name(p)}", overrides + _point_overrides(p)) for p in sweep_points(experiment)]
    out = []
    for job_workdir, job_overrides in jobs:
        remote = f"cd {shlex.quote(repo_dir)} && {run_command(experiment, job_workdir, job_overrides)}"
        out.append(
            f"gcloud compute tpus tpu-vm ssh {shlex.quote(name)} --zone={shlex.quote(zone)} --worker=all "
            f"--command={shlex.quote(remote)}"
        )
    return out


def sbatch_script(
    experiment: str,
    job_name: str,
    nodes: int,
    gpus_per_node: int,
    partition: str,
    hours: int,
    workdir: str,
    repo_dir: str,
    per_point: bool,
    overrides: list[str],
) -> str:
    """An sbatch script: one task per node (one JAX process per host), or a job array over sweep points."""
    points = sweep_points(experiment) if per_point else []
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={gpus_per_node}",
        f"#SBATCH --time={hours}:00:00",
        f"#SBATCH --output={workdir}/slurm-%x-%A_%a.out",
    ]
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    if points:
        lines.append(f"#SBATCH --array=0-{len(points) - 1}")
    lines += ["set -euo pipefail", f"cd {shlex.quote(repo_dir)}"]
    if points:
        lines.append("POINTS=(" + " ".join(shlex.quote(" ".join(_point_overrides(p))) for p in points) + ")")
        lines.append("NAMES=(" + " ".join(_point_name(p) for p in points) + ")")
        command = run_command(experiment, "", overrides, f'"{workdir}/${{NAMES[$SLURM_ARRAY_TASK_ID]}}"')
        lines.append(f"srun {command} ${{POINTS[$SLURM_ARRAY_TASK_ID]}}")
    else:
        lines.append(f"srun {run_command(experiment, workdir, overrides)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tsasr.launch", description=__doc__.splitlines()[0])
    parser.add_argument("experiment")
    parser.add_argument("--target", choices=("tpu", "slurm"), required=True)
    parser.add_argument(
        "--workdir", required=True, help="shared output directory (GCS bucket path or cluster filesystem)"
    )
    parser.add_argument("--repo-dir", default="~/tsasr", help="checkout of tsasr on every host")
    parser.add_argument("--per-point", action="store_true", help="one job per sweep point instead of one vmapped job")
    parser.add_argument("--name", default="tsasr", help="TPU VM name, or SLURM job name")
    parser.add_argument("--zone", default="us-central2-b", help="TPU zone")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--partition", default="")
    parser.add_argument("--hours", type=int, default=24)
    args, overrides = parser.parse_known_args(argv)
    bad = [a for a in overrides if not a.startswith("--config.")]
    if bad:
        parser.error(f"unrecognised arguments: {' '.join(bad)}")
    config_lib.experiment_config(args.experiment, overrides=overrides)  # fail here, not on the cluster
    if args.per_point and not sweep_points(args.experiment):
        parser.error(f"{args.experiment} has no sweep(); --per-point needs one")
    if args.target == "tpu":
        print(
            "\n".join(
                tpu_commands(
                    args.experiment, args.name, args.zone, args.workdir, args.repo_dir, args.per_point, overrides
                )
            )
        )
    else:
        print(
            sbatch_script(
                args.experiment,
                args.name,
                args.nodes,
                args.gpus_per_node,
                args.partition,
                args.hours,
                args.workdir,
                args.repo_dir,
                args.per_point,
                overrides,
            ),
            end="",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
