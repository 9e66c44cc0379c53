"""`python -m tsasr.run EXPERIMENT.py [--workdir DIR] [--tiny] [--until STAGE] [--config.a.b=value ...]`

Thin entry point: parse, load the experiment and its recipe, write config.json, run the
recipe's stages, print what they made and the report. The work is in tsasr.recipe,
tsasr.pipeline and the recipe's stage modules, which tests call directly.
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import sys

from tsasr import config as config_lib
from tsasr import parallel, pipeline
from tsasr import recipe as recipe_lib
from tsasr import workdir as wd
from tsasr.train import malloc, preemption


def experiment_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser of an experiment file and the options every command that runs one takes."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("experiment", help="experiment file with get_config(), e.g. experiments/top20_T2.py")
    parser.add_argument(
        "--workdir",
        help="output directory, a filesystem path (a gcsfuse mount for a bucket); default runs/<experiment>",
    )
    parser.add_argument("--tiny", action="store_true", help="shrink everything for a ~2 minute smoke run")
    parser.add_argument("--until", help="stop after this stage (the recipe's stages are listed on a wrong name)")
    return parser


def parse_known(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """(options, the --config.a.b=value overrides); any other argument stops the parser."""
    args, rest = parser.parse_known_args(argv)
    bad = [a for a in rest if not a.startswith("--config.")]
    if bad:
        parser.error(
            f"unrecognised arguments: {' '.join(bad)} (config overrides look like --config.section.field=value)"
        )
    return args, rest


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = experiment_parser("python -m tsasr.run", __doc__.splitlines()[0])
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="many hosts: jax.distributed.initialize() (finds its peers on TPU VMs and under SLURM)",
    )
    parser.add_argument("--coordinator", help="host:port of process 0, for explicit multi-process runs")
    parser.add_argument("--num_processes", type=int, default=1, help="with --coordinator: processes in all")
    parser.add_argument("--process_id", type=int, default=0, help="with --coordinator: this process's index")
    return parse_known(parser, argv)


def default_workdir(config, tiny: bool) -> pathlib.Path:
    """runs/<experiment name>, with _tiny for a --tiny run: where a run goes without --workdir."""
    return pathlib.Path("runs") / (config.name + ("_tiny" if tiny else ""))


def setup_logging(workdir: pathlib.Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    # The runner owns the log: a handler a library put on the root logger while a recipe loaded
    # (importing orbax adds one) would print every line a second time.
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in (logging.StreamHandler(sys.stderr), logging.FileHandler(workdir / "run.log")):
        handler.setFormatter(fmt)
        root.addHandler(handler)
    # orbax and jax narrate every checkpoint and backend probe through absl at INFO.
    for name in ("absl", "jax._src.xla_bridge"):
        logging.getLogger(name).setLevel(logging.WARNING)


def format_report(report: dict) -> str:
    lines = []
    for stage, info in report.items():
        lines.append(f"{stage:<18} {info['status']:<8} {info['seconds']:>7.1f} s")
        summary = info["summary"]
        for part, values in summary.items():
            lines.append(f"    {part:<18} {json.dumps(values, sort_keys=True)}")
    return "\n".join(lines)


def load(experiment: str, tiny: bool, overrides: list[str]):
    """(config, recipe) of an experiment file: its get_config(), shrunk and overridden, with the
    grid of its sweep() (when it declares one) in config.sweep, so the grid keys its stages."""
    config = config_lib.experiment_config(experiment, tiny_run=tiny, overrides=overrides)
    recipe = recipe_lib.load(config.recipe)
    module = config_lib.load_experiment(experiment)
    if hasattr(module, "sweep"):
        if recipe.with_sweep is None:
            raise ValueError(f"{experiment}: declares sweep(), but recipe {recipe.name!r} has no sweeps")
        config = recipe.with_sweep(config, module.sweep())
    return config, recipe


def main(argv: list[str] | None = None) -> int:
    malloc.tune()  # before JAX starts its threads
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    try:  # before any work; and never pathlib.Path(gs://b/r), which is the local path gs:/b/r
        workdir = wd.local_workdir(args.workdir) if args.workdir else None
    except ValueError as err:
        print(f"error: --workdir {err}", file=sys.stderr)
        return 2
    try:
        config, recipe = load(args.experiment, args.tiny, overrides)
        stage_names = [s.name for s in recipe.stages(config)]
        until = args.until or config.get("until") or None
        if until and until not in stage_names:
            raise ValueError(f"--until {until!r} is not a stage of recipe {recipe.name!r}: {', '.join(stage_names)}")
    except (KeyError, ValueError, TypeError, FileNotFoundError, AttributeError) as err:
        print(f"error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    problems = recipe.check(config) if recipe.check else []
    if problems:  # before any work: every problem at once, one line each
        print("\n".join(f"error: {problem}" for problem in problems), file=sys.stderr)
        return 2
    workdir = workdir or default_workdir(config, args.tiny)
    if config.get("workers", 1) <= 0:
        with config.unlocked():
            config.workers = parallel.default_workers()
    if args.coordinator or args.distributed:
        from tsasr.train import sharding  # loads JAX: only multi-host runs initialise it here

        sharding.initialize_distributed(
            args.coordinator,
            args.num_processes if args.coordinator else None,
            args.process_id if args.coordinator else None,
        )
    setup_logging(workdir)
    wd.write_json(workdir / "config.json", config.to_dict())
    logging.getLogger("tsasr").info("experiment %s (recipe %s) -> %s", args.experiment, recipe.name, workdir)
    try:
        report = recipe_lib.run(recipe, config, workdir, until=until)
    except preemption.Preempted as notice:  # the stage's .started marker stays: a rerun resumes it
        logging.getLogger("tsasr").warning("%s; run the same command again to resume", notice)
        return preemption.EXIT_CODE
    if pipeline.process_index() == 0:
        print(format_report(report))
        table = recipe_lib.write_report(recipe, config, workdir)
        print(f"\nresults ({workdir / 'results.md'}):\n{table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
