"""`python -m tsasr.seeds EXPERIMENT.py [--seeds 0 1 2 3] [--workdir DIR] [--tiny] [--until S] [--config.a.b=v ...]`

An experiment's systems at several training seeds, and what holds across them.

One run's comparison of two networks mixes the method with the luck of one initialisation: on
the built-in corpus the CE teacher's clean WER spans 20.9-24.5 % over four training seeds. This
runs the experiment once per seed `s`, with every network's `train.seed` set to `s` (0: each
network on the run's seed, as a plain run trains it unless its experiment sets a train.seed;
see tsasr.train.config.network_seed), so every network of the chain is retrained from its own
initialisation: seed s's students learn from seed s's teacher. The data (corpus, noise, mixes,
alignments, graph) and anything else whose stage key the seed does not change are made once:
seed 0 runs in DIR (default runs/<experiment>, the plain run's workdir, so a finished main job
is seed 0 already), and each other seed in DIR/seeds/<s>/ starts from hard links to DIR's
finished stages of the same key (a copy where links cannot be made; tsasr writes every file by
renaming a new one into place, so the two workdirs never write into each other's files).

At the end it writes DIR/seeds.json, DIR/seeds.md and DIR/plots/seeds_<metric>.png: per system
and test condition the metric at every seed, its mean and sample standard deviation and the 95 %
Student-t interval of the mean; and against each of the recipe's reference systems (the asr
recipe: teacher_seq, teacher_ce) the paired relative change seed by seed (system and reference
of the same seed), its mean with a 95 % t-interval, and how many seeds improve. These intervals
are over training seeds on this test set; each seed's results.md has the bootstrap intervals
over the test set's utterances.

A seed whose run fails stops the command with its exit code; running it again resumes (every
finished stage of every seed is skipped).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import pathlib
import shutil
import sys
from collections.abc import Callable

import ml_collections
import numpy as np

from tsasr import pipeline
from tsasr import run as run_lib
from tsasr import workdir as wd
from tsasr.evaluate import report as report_lib
from tsasr.evaluate import results as results_lib

log = logging.getLogger("tsasr.seeds")
SEEDS_DIR = "seeds"  # DIR/seeds/<s>/: the workdir of training seed s > 0


def network_seed_fields(config: ml_collections.ConfigDict) -> list[str]:
    """The dotted `...train.seed` fields of a config: one per network section that trains."""
    fields = []

    def walk(node: ml_collections.ConfigDict, prefix: str) -> None:
        for name, value in node.items():
            if isinstance(value, ml_collections.ConfigDict):
                if name == "train" and "seed" in value:
                    fields.append(f"{prefix}{name}.seed")
                walk(value, f"{prefix}{name}.")

    walk(config, "")
    return fields


def seed_overrides(config: ml_collections.ConfigDict, seed: int) -> list[str]:
    """The runner's overrides that train every network of `config` at training seed `seed`."""
    return [f"--config.{field}={int(seed)}" for field in network_seed_fields(config)]


def seed_workdir(workdir: pathlib.Path, seed: int) -> pathlib.Path:
    return workdir if seed == 0 else workdir / SEEDS_DIR / str(seed)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def share_finished_stages(base: pathlib.Path, target: pathlib.Path, stages, base_keys: dict, keys: dict) -> list[str]:
    """Gives `target` every stage that `base` finished under the key it has in `target`'s
    config (its outputs, hard-linked, and its marker), unless `target` has it finished under
    that key or is running it (a `.started` marker: that run resumes). What `target` holds of
    the stage under another key is cleared first as the runner clears it (a model is moved to
    superseded/, never deleted). `base`'s results.json comes too where `target` has none; the
    runner prunes its rows of stages not shared at the end of the run. Returns the stages given."""
    shared = []
    for stage in stages:
        key, marker = keys[stage.name], wd.read_marker(base, stage.name)
        if key != base_keys[stage.name] or not marker or marker.get("key") != key:
            continue
        mine = wd.read_marker(target, stage.name)
        if (mine and mine.get("key") == key) or wd.read_marker(target, f"{stage.name}.started"):
            continue
        pipeline.start_clean(stage, target, (mine or {}).get("key"))
        for output in stage.outputs:
            source, destination = base / output, target / output
            if source.is_dir():
                shutil.copytree(source, destination, copy_function=_link_or_copy)
            elif source.exists():
                destination.parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(source, destination)
        wd.write_marker(target, stage.name, key, marker["summary"])
        shared.append(stage.name)
    results = base / results_lib.FILE
    if shared and results.exists() and not (target / results_lib.FILE).exists():
        wd.write_text(target / results_lib.FILE, results.read_text())
    return shared


def t_interval(values: np.ndarray, level: float = 0.95) -> list[float] | None:
    """The Student-t `level` interval of the mean of `values` (None for fewer than two)."""
    from scipy import stats

    values = np.asarray(values, np.float64)
    if values.size < 2:
        return None
    half = stats.t.ppf(0.5 + level / 2, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size)
    return [float(values.mean() - half), float(values.mean() + half)]


def summarise(
    results: dict[int, dict],
    spec: report_lib.ReportSpec,
    item_errors: Callable[[int, str, str], dict[str, float]] | None = None,
    replications: int = 10000,
) -> dict:
    """seeds.json's content from each seed's results.json ({seed: results}): per metric, system
    and condition the values by seed, mean, sd and t-interval; per reference the paired relative
    changes (%) by seed, their mean, t-interval, the count of seeds improving and the change of
    the mean values. With `item_errors` ((seed, system, condition) -> {test item: errors}, the
    recipe's item_errors in each seed's workdir) the primary metric's changes also get a paired
    bootstrap over seeds and test items together (tsasr.decode.scoring.seeded_relative_changes):
    `bootstrap_ci95` and `p_improves`. Systems and conditions are those scored at every seed."""
    seeds = sorted(results)
    systems = report_lib.ordered_systems(spec, results[seeds[0]].get("systems", {}))
    systems = [s for s in systems if all(s in results[seed].get("systems", {}) for seed in seeds)]
    out = {"seeds": seeds, "metrics": {}}
    for metric in spec.metrics:
        table = {
            system: {
                condition: np.array([results[seed]["systems"][system][metric.name][condition] for seed in seeds])
                for condition in report_lib.scored_conditions(results[seeds[0]], spec)
                if all(condition in results[seed]["systems"][system].get(metric.name, {}) for seed in seeds)
            }
            for system in systems
        }
        values = {
            system: {
                condition: {
                    "by_seed": [float(v) for v in vs],
                    "mean": float(vs.mean()),
                    "sd": float(vs.std(ddof=1)) if vs.size > 1 else None,
                    "ci95": t_interval(vs),
                }
                for condition, vs in by_condition.items()
            }
            for system, by_condition in table.items()
        }
        errors_of = item_errors if metric is spec.primary else None
        relative = {}
        for reference in spec.references:
            if reference not in table:
                continue
            rows = {}
            for system in systems:
                if system == reference:
                    continue
                rows[system] = {}
                for condition, vs in table[system].items():
                    ref = table[reference].get(condition)
                    if ref is None or np.any(ref == 0):
                        continue
                    change = 100.0 * (vs / ref - 1.0)
                    better = change < 0 if metric.lower_is_better else change > 0
                    row = rows[system][condition] = {
                        "by_seed": [float(c) for c in change],
                        "mean": float(change.mean()),
                        "ci95": t_interval(change),
                        "seeds_improving": int(better.sum()),
                        "change_of_means": float(100.0 * (vs.mean() / ref.mean() - 1.0)),
                    }
                    if errors_of is not None:
                        row.update(_bootstrap(errors_of, seeds, reference, system, condition, metric, replications))
            relative[reference] = rows
        out["metrics"][metric.name] = {"values": values, "relative_to": relative}
    return out


def _bootstrap(errors_of, seeds, reference: str, system: str, condition: str, metric, replications: int) -> dict:
    """{'bootstrap_ci95', 'p_improves'} of `system` against `reference` over seeds and test items,
    or {} (logged) where the seeds' test items differ."""
    from tsasr.decode import scoring  # loads kaldialign: only where a recipe gives item errors

    per_seed = [(errors_of(seed, reference, condition), errors_of(seed, system, condition)) for seed in seeds]
    items = sorted(per_seed[0][0])
    if any(sorted(a) != items or sorted(b) != items for a, b in per_seed):
        log.warning("%s against %s on %s: the seeds' test items differ; no bootstrap", system, reference, condition)
        return {}
    errors = [np.array([[pair[k][i] for i in items] for pair in per_seed]) for k in (0, 1)]
    changes = scoring.seeded_relative_changes(*errors, replications=replications)
    if changes is None:
        return {}
    better = changes < 0 if metric.lower_is_better else changes > 0
    return {
        "bootstrap_ci95": [float(x) for x in np.percentile(changes, [2.5, 97.5])],
        "p_improves": float(better.mean()),
    }


def _table(conditions: list[str], rows: dict[str, dict], cell: Callable[[str, str, dict], str]) -> list[str]:
    """Markdown lines: a system per row, a condition per column, `cell(system, condition, entry)`
    where the row has the condition, else a dash."""
    lines = ["| system | " + " | ".join(conditions) + " |", "|---|" + "---:|" * len(conditions)]
    for system, by_condition in rows.items():
        cells = [cell(system, c, by_condition[c]) if c in by_condition else "–" for c in conditions]
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return lines + [""]


def _value_cell(digits: int, system: str, condition: str, entry: dict) -> str:
    """'mean ± sd (each seed's value)', to the metric's `digits`."""
    sd = "" if entry["sd"] is None else f" ± {entry['sd']:.{digits}f}"
    return f"{entry['mean']:.{digits}f}{sd} (" + " / ".join(f"{v:.{digits}f}" for v in entry["by_seed"]) + ")"


def seeds_markdown(summary: dict, spec: report_lib.ReportSpec, paper: dict | None = None) -> str:
    """seeds.md: per metric the mean ± sd table with every seed's value, and per reference the
    paired change (with the bootstrap over seeds and test items where the summary has it, else
    the mean of the seeds' changes with its t-interval), the seeds improving and (where the
    experiment declares the paper's table) the paper's change."""
    seeds, n = summary["seeds"], len(summary["seeds"])
    table = (paper or {}).get("table", {})
    out = [f"# Training seeds {', '.join(map(str, seeds))}\n"]
    out.append(
        f"Every network retrained at each of {n} training seeds on the same data (python -m tsasr.seeds): "
        "mean ± sample standard deviation over seeds, then each seed's value.\n"
    )
    for metric in spec.metrics:
        part = summary["metrics"].get(metric.name)
        if not part or not part["values"]:
            continue
        conditions = list(next(iter(part["values"].values())))
        out += [
            f"## {metric.label}\n",
            *_table(conditions, part["values"], functools.partial(_value_cell, metric.digits)),
        ]
        for reference, rows in part["relative_to"].items():
            boot = any("bootstrap_ci95" in e for by_condition in rows.values() for e in by_condition.values())
            how = (
                "the change of the mean over seeds (paired bootstrap 95 % interval over seeds and test items), "
                "p = the bootstrap's probability that the system improves"
                if boot
                else "the mean of the seeds' changes (95 % t-interval over seeds)"
            )

            def change_cell(system: str, condition: str, entry: dict) -> str:
                theirs = table.get(reference, {}).get(system, {}).get(condition)
                if "bootstrap_ci95" in entry:
                    low, high = entry["bootstrap_ci95"]
                    head = f"{entry['change_of_means']:+.1f} ({low:+.1f}, {high:+.1f}), p {entry['p_improves']:.2f}"
                else:
                    ci = entry["ci95"]
                    head = f"{entry['mean']:+.1f}" + (f" ({ci[0]:+.1f}, {ci[1]:+.1f})" if ci else "")
                return f"{head}, {entry['seeds_improving']}/{n}" + (f" [{theirs:+.1f}]" if theirs is not None else "")

            out.append(
                f"Relative change (%) against `{reference}` of the same seed: {how}; seeds improving of {n}"
                + (" [the paper's]" if reference in table else "")
                + ".\n"
            )
            out += _table(conditions, rows, change_cell)
    return "\n".join(out)


def plot_seeds(summary: dict, spec: report_lib.ReportSpec, out: pathlib.Path) -> list[str]:
    """One PNG per metric: each system's value at every seed (dots) and the mean with its
    95 % t-interval (bar), one panel per condition."""
    plt = report_lib.pyplot()
    made = []
    for metric in spec.metrics:
        values = summary["metrics"].get(metric.name, {}).get("values")
        if not values:
            continue
        systems = list(values)
        conditions = list(next(iter(values.values())))
        fig, axes = plt.subplots(1, len(conditions), figsize=(3.2 * len(conditions), 3.5), squeeze=False)
        for ax, condition in zip(axes[0], conditions):
            for i, system in enumerate(systems):
                entry = values[system].get(condition)
                if entry is None:
                    continue
                ax.plot([i] * len(entry["by_seed"]), entry["by_seed"], "o", color="0.6", markersize=3)
                ci = entry["ci95"] or [entry["mean"], entry["mean"]]
                ax.errorbar(
                    [i], [entry["mean"]], yerr=[[entry["mean"] - ci[0]], [ci[1] - entry["mean"]]], fmt="s", capsize=3
                )
            ax.set_xticks(range(len(systems)), systems, rotation=60, ha="right", fontsize=7)
            ax.set_title(condition, fontsize=9)
        axes[0][0].set_ylabel(metric.label)
        fig.suptitle(f"{len(summary['seeds'])} training seeds: mean and 95 % t-interval", fontsize=8)
        fig.tight_layout()
        name = f"seeds_{metric.name}.png"
        report_lib.save_figure(fig, out / name)
        made.append(name)
    return made


def write_seed_report(workdir: pathlib.Path, seeds: list[int], spec, paper: dict | None, item_errors=None) -> str:
    """seeds.json, seeds.md and plots/seeds_*.png of the seeds' workdirs under `workdir`;
    `item_errors`: the recipe's (workdir, system, condition) -> {test item: errors}, if it has one."""
    results = {s: results_lib.read(seed_workdir(workdir, s)) for s in seeds}
    errors_of = None
    if item_errors is not None:  # each (seed, system, condition) scored once, though it meets several references

        @functools.cache
        def errors_of(seed: int, system: str, condition: str) -> dict[str, float]:
            return item_errors(seed_workdir(workdir, seed), system, condition)

    summary = summarise(results, spec, errors_of)
    wd.write_json(workdir / "seeds.json", summary)
    text = seeds_markdown(summary, spec, paper)
    wd.write_text(workdir / "seeds.md", text)
    plot_seeds(summary, spec, workdir / "plots")
    return text


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = run_lib.experiment_parser("python -m tsasr.seeds", __doc__.splitlines()[2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3], help="training seeds (0: the run's)")
    args, rest = run_lib.parse_known(parser, argv)
    if len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0:
        parser.error(f"--seeds must be distinct non-negative integers, got {args.seeds}")
    return args, rest


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    try:  # never pathlib.Path(gs://b/r), which is the local path gs:/b/r
        workdir = wd.local_workdir(args.workdir) if args.workdir else None
    except ValueError as err:
        print(f"error: --workdir {err}", file=sys.stderr)
        return 2
    try:
        config, recipe = run_lib.load(args.experiment, args.tiny, overrides)
    except (KeyError, ValueError, TypeError, FileNotFoundError, AttributeError) as err:
        print(f"error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    if not network_seed_fields(config):
        print(f"error: {args.experiment}: no network of recipe {recipe.name!r} has a train.seed", file=sys.stderr)
        return 2
    workdir = workdir or run_lib.default_workdir(config, args.tiny)
    passthrough = [
        args.experiment,
        *(["--tiny"] if args.tiny else []),
        *(["--until", args.until] if args.until else []),
    ]
    base_config, _ = run_lib.load(args.experiment, args.tiny, overrides + seed_overrides(config, 0))
    base_keys = None
    for seed in [0, *sorted(s for s in args.seeds if s != 0)]:
        extra = seed_overrides(config, seed)
        target = seed_workdir(workdir, seed)
        if seed != 0:
            seed_config, _ = run_lib.load(args.experiment, args.tiny, overrides + extra)
            stages = recipe.stages(seed_config)
            base_keys = base_keys or pipeline.stage_keys(base_config, recipe.stages(base_config))
            target.mkdir(parents=True, exist_ok=True)
            shared = share_finished_stages(workdir, target, stages, base_keys, pipeline.stage_keys(seed_config, stages))
            if shared:
                log.info("seed %d: %s shared from %s", seed, ", ".join(shared), workdir)
        elif 0 not in args.seeds:
            continue  # seed 0 is only the others' source of shared stages: use what it has
        code = run_lib.main([*passthrough, "--workdir", str(target), *overrides, *extra])
        if code:
            log.error("seed %d: python -m tsasr.run exited with %d; run the same command again to resume", seed, code)
            return code
    paper = config.get("paper")
    text = write_seed_report(
        workdir, sorted(args.seeds), recipe.report, paper.to_dict() if paper else None, recipe.item_errors
    )
    print(f"\nseeds ({workdir / 'seeds.md'}):\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
