"""`python -m tsasr.run EXPERIMENT.py [--workdir DIR] [--tiny] [--until STAGE] [--config.a.b=value ...]`

Thin entry point: parse, load the experiment, write config.json, run the stages, print what
they made. The work is in tsasr.pipeline and the stage modules, which tests call directly.
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import sys

from tsasr import config as config_lib
from tsasr import parallel, pipeline
from tsasr import workdir as wd
from tsasr.report import write_report
from tsasr.train import malloc


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m tsasr.run", description=__doc__.splitlines()[0])
    parser.add_argument("experiment", help="experiment file with get_config(), e.g. experiments/top20_T2.py")
    parser.add_argument("--workdir", help="output directory (default: runs/<experiment name>)")
    parser.add_argument("--tiny", action="store_true", help="shrink everything for a ~2 minute smoke run")
    parser.add_argument("--until", choices=[s.name for s in pipeline.STAGES], help="stop after this stage")
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="many hosts: jax.distributed.initialize() (finds its peers on TPU VMs and under SLURM)",
    )
    parser.add_argument("--coordinator", help="host:port of process 0, for explicit multi-process runs")
    parser.add_argument("--num_processes", type=int, default=1, help="with --coordinator: processes in all")
    parser.add_argument("--process_id", type=int, default=0, help="with --coordinator: this process's index")
    args, rest = parser.parse_known_args(argv)
    bad = [a for a in rest if not a.startswith("--config.")]
    if bad:
        parser.error(
            f"unrecognised arguments: {' '.join(bad)} (config overrides look like --config.section.field=value)"
        )
    return args, rest


def setup_logging(workdir: pathlib.Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in (logging.StreamHandler(sys.stderr), logging.FileHandler(workdir / "run.log")):
        handler.setFormatter(fmt)
        root.addHandler(handler)
    # orbax and jax narrate every checkpoint and backend probe through absl at INFO.
    for name in ("absl", "jax._src.xla_bridge"):
        logging.getLogger(name).setLevel(logging.WARNING)


def format_report(report: dict) -> str:
    lines = []
    for stage, info in report.items():
        lines.append(f"{stage:<10} {info['status']:<8} {info['seconds']:>7.1f} s")
        summary = info["summary"]
        for part, values in summary.items():
            lines.append(f"    {part:<18} {json.dumps(values, sort_keys=True)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    malloc.tune()  # before JAX starts its threads
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = config_lib.experiment_config(args.experiment, tiny_run=args.tiny, overrides=overrides)
        experiment = config_lib.load_experiment(args.experiment)
        if hasattr(experiment, "sweep"):  # the grid joins the config, so it keys the sweep stage
            from tsasr.distill import sweep

            config = sweep.with_grid(config, experiment.sweep())
    except (KeyError, ValueError, TypeError, FileNotFoundError, AttributeError) as err:
        print(f"error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    workdir = pathlib.Path(args.workdir or pathlib.Path("runs") / (config.name + ("_tiny" if args.tiny else "")))
    if config.workers <= 0:
        with config.unlocked():
            config.workers = parallel.default_workers()
    if args.coordinator or args.distributed:
        from tsasr.train import sharding

        sharding.initialize_distributed(
            args.coordinator,
            args.num_processes if args.coordinator else None,
            args.process_id if args.coordinator else None,
        )
    setup_logging(workdir)
    wd.write_json(workdir / "config.json", config.to_dict())
    logging.getLogger("tsasr").info("experiment %s -> %s", args.experiment, workdir)
    until = args.until or config.get("until") or None
    if until and until not in {s.name for s in pipeline.STAGES}:
        print(f"error: config.until={until!r} is not a stage", file=sys.stderr)
        return 2
    stages = pipeline.STAGES
    if "sweep" in config:  # the recipe up to `label`, then every grid point in one vmapped trainer
        from tsasr.distill import sweep

        stages = sweep.stages(config, until)
    report = pipeline.run_stages(config, workdir, stages=stages, until=until)
    print(format_report(report))
    table = write_report(workdir)
    print(f"\nresults ({workdir / 'results.md'}):\n{table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
