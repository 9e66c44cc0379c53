"""The end-of-run report: results.md and PNG plots from results.json and the metrics logs.

Reads only what stages wrote (results.json, <stage>/metrics.jsonl) and the recipe's
`ReportSpec`; rewrites results.md and plots/ each time it runs, so it is cheap and always
matches the workdir. It computes no metric: evaluation stages do.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib

import numpy as np

from tsasr import workdir as wd
from tsasr.evaluate import results as results_lib

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Metric:
    name: str  # the key in results.json, e.g. "wer"
    label: str  # how tables and axes name it, e.g. "WER (%)"
    lower_is_better: bool = True
    digits: int = 2


@dataclasses.dataclass(frozen=True)
class ReportSpec:
    """What a recipe's results table and plots show."""

    metrics: tuple[Metric, ...]  # the first is the primary metric (plots, relative changes)
    conditions: tuple[str, ...]  # test conditions, in column order
    system_order: tuple[str, ...] = ()  # systems listed first, in this order; others follow sorted
    # Systems relative changes are computed against; the first one scored is the table's
    # `rel.` reference (e.g. the sequence-trained teacher, else the CE teacher).
    references: tuple[str, ...] = ()
    curves: tuple[str, ...] = ("loss",)  # metrics.jsonl keys plotted per training stage
    description: str = ""  # one paragraph under the title of results.md
    extra_sections: tuple[str, ...] = ()  # markdown files in the workdir appended when present

    @property
    def primary(self) -> Metric:
        return self.metrics[0]


def ordered_systems(spec: ReportSpec, systems: dict) -> list[str]:
    """The names in `systems`: the spec's system_order first, in that order, then the rest sorted."""
    known = [s for s in spec.system_order if s in systems]
    return known + sorted(s for s in systems if s not in spec.system_order)


def _fmt(value, spec: str = ".2f") -> str:
    return "–" if value is None else format(value, spec)


def scored_conditions(results: dict, spec: ReportSpec) -> tuple[str, ...]:
    """The spec's conditions, then any other condition a system was scored on (e.g. a user's
    extra test set), in name order."""
    scored = {c for entry in results.get("systems", {}).values() for c in entry.get(spec.primary.name, {})}
    return tuple(spec.conditions) + tuple(sorted(scored - set(spec.conditions)))


def results_table(results: dict, spec: ReportSpec) -> str:
    """Markdown: each metric per system and condition (with its 95 % interval), and the primary
    metric's change relative to the first scored reference."""
    conditions = scored_conditions(results, spec)
    systems = results.get("systems", {})
    if not systems:
        return "No system has been scored yet.\n"
    reference = next((r for r in spec.references if r in results.get("relative_to", {})), None)
    relative = results.get("relative_to", {}).get(reference, {}).get(spec.primary.name, {}) if reference else {}
    metrics = [m for m in spec.metrics if any(m.name in e for e in systems.values())]
    header = [f"{m.label} {c}" for m in metrics for c in conditions]
    header += [f"rel. {c} (%)" for c in conditions] if reference else []
    lines = ["| system | " + " | ".join(header) + " |", "|---|" + "---:|" * len(header)]
    for name in ordered_systems(spec, systems):
        cells = []
        for metric in metrics:
            values = systems[name].get(metric.name, {})
            intervals = systems[name].get("ci", {}).get(metric.name, {})
            for c in conditions:
                cell = _fmt(values.get(c), f".{metric.digits}f")
                if c in intervals:
                    low, high = intervals[c]
                    cell += f" [{low:.{max(metric.digits - 1, 0)}f}, {high:.{max(metric.digits - 1, 0)}f}]"
                cells.append(cell)
        if reference:
            cells += [_fmt(relative.get(name, {}).get(c), "+.1f") for c in conditions]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    note = f"\n`rel.` is the relative change of {spec.primary.name} against `{reference}`.\n" if reference else ""
    return "\n".join(lines) + "\n" + note


def conditions_table(results: dict, spec: ReportSpec) -> str:
    """Markdown: the facts about each test condition (results.json `conditions`), or ''."""
    facts = results.get("conditions", {})
    names = [c for c in spec.conditions if c in facts] + sorted(c for c in facts if c not in spec.conditions)
    fields = sorted({k for c in names for k, v in facts[c].items() if isinstance(v, (int, float))})
    if not names or not fields:
        return ""
    lines = ["| condition | " + " | ".join(fields) + " |", "|---|" + "---:|" * len(fields)]
    for name in names:
        cells = [facts[name].get(f) for f in fields]
        lines.append(f"| {name} | " + " | ".join("–" if v is None else f"{v:g}" for v in cells) + " |")
    return "\n".join(lines) + "\n"


def paper_tables(results: dict, spec: ReportSpec, paper: dict) -> str:
    """Markdown: the paper's table of relative changes beside this run's, one table per
    reference system. paper['table'] is {reference: {system: {condition: percent}}} (the
    paper's Table 2 reports every system against the CE teacher and, in brackets, against the
    sequence-trained one); paper['labels'] names the systems' rows ({system: text}). Each
    cell is this run's change, its paired bootstrap 95 % interval (results.json
    `relative_ci95_to`) in parentheses and the paper's in brackets; the p columns are the bootstrap
    probability that the system improves on the reference (results.json `p_better_than`)."""
    if "table" not in paper:
        return paper_table(results, spec, paper)
    primary = spec.primary.name
    labels = paper.get("labels", {})
    systems = results.get("systems", {})
    out = []
    for reference, rows in paper["table"].items():
        conditions = [c for c in spec.conditions if any(c in r for r in rows.values())]
        ours = results.get("relative_to", {}).get(reference, {}).get(primary, {})
        rows = {system: rows[system] for system in ordered_systems(spec, rows)}  # the recipe's order, not the config's
        out.append(
            f"Relative change (%) of {spec.primary.label.split(' (')[0]} against `{reference}`: this run "
            f"(its paired bootstrap 95 % interval) [the paper's]; p = bootstrap probability that the "
            f"system improves on `{reference}`.\n"
        )
        out.append("| system | " + " | ".join(conditions) + " | " + " | ".join(f"p {c}" for c in conditions) + " |")
        out.append("|---|" + "---:|" * (2 * len(conditions)))
        for system, theirs in rows.items():
            p_better = systems.get(system, {}).get("p_better_than", {}).get(reference, {})
            intervals = systems.get(system, {}).get("relative_ci95_to", {}).get(reference, {})
            change = ours.get(system, {})
            cells = [
                f"{_fmt(change.get(c), '+.1f')}{_interval(intervals.get(c))} [{_fmt(theirs.get(c), '+.1f')}]"
                for c in conditions
            ]
            cells += [_fmt(p_better.get(c), ".3f") for c in conditions]
            name = f"{system} ({labels[system]})" if system in labels else system
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        out.append("")
    return f"{paper['source']}.\n\n" + "\n".join(out)


def _interval(interval) -> str:
    """' (low, high)' of a relative change's interval, or '' where none was computed (a run
    scored before intervals were, or a reference without errors)."""
    return f" ({interval[0]:+.1f}, {interval[1]:+.1f})" if interval else ""


def paper_table(results: dict, spec: ReportSpec, paper: dict) -> str:
    """Markdown: the paper's relative changes (paper['relative'], per condition) of
    paper['system'] against paper['reference'] beside this run's."""
    conditions = [c for c in spec.conditions if c in paper["relative"]]
    ours = (
        results.get("relative_to", {}).get(paper["reference"], {}).get(spec.primary.name, {}).get(paper["system"], {})
    )
    lines = [
        "| | " + " | ".join(conditions) + " |",
        "|---|" + "---:|" * len(conditions),
        f"| paper ({paper['source']}): {paper['system']} vs {paper['reference']} (rel. %) | "
        + " | ".join(f"{paper['relative'][c]:+.1f}" for c in conditions)
        + " |",
        f"| this run: {paper['system']} vs {paper['reference']} (rel. %) | "
        + " | ".join(_fmt(ours.get(c), "+.1f") for c in conditions)
        + " |",
    ]
    return "\n".join(lines) + "\n"


def pyplot():
    """matplotlib.pyplot on the Agg backend, imported when a plot is drawn (slow to import, and
    only reports draw)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: pathlib.Path) -> None:
    """Writes `fig` as PNG to `path` atomically and closes it."""
    with wd.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    pyplot().close(fig)


def _plot_training_curves(workdir: pathlib.Path, spec: ReportSpec, out: pathlib.Path) -> list[str]:
    plt = pyplot()
    made = []
    for metrics in sorted(workdir.glob("*/metrics.jsonl")):
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        keys = [k for k in spec.curves if any(k in r for r in rows)]
        if not rows or not keys:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for key in keys:
            points = [(r["step"], r[key]) for r in rows if key in r and "step" in r]
            if points:
                ax.plot(*zip(*points), label=key)
        ax.set_xlabel("step")
        ax.set_title(metrics.parent.name)
        ax.legend()
        fig.tight_layout()
        name = f"training_{metrics.parent.name}.png"
        save_figure(fig, out / name)
        made.append(name)
    return made


def _plot_metric(results: dict, spec: ReportSpec, metric: Metric, out: pathlib.Path) -> str | None:
    """Bars per system and condition with the 95 % intervals as error bars."""
    plt = pyplot()
    conditions = scored_conditions(results, spec)
    systems = results.get("systems", {})
    names = [n for n in ordered_systems(spec, systems) if systems[n].get(metric.name)]
    if not names:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = np.array([systems[name][metric.name].get(c, np.nan) for c in conditions])
        intervals = systems[name].get("ci", {}).get(metric.name, {})
        low = np.array([values[j] - intervals[c][0] if c in intervals else 0.0 for j, c in enumerate(conditions)])
        high = np.array([intervals[c][1] - values[j] if c in intervals else 0.0 for j, c in enumerate(conditions)])
        ax.bar(
            np.arange(len(conditions)) + i * width,
            values,
            width,
            yerr=np.maximum(np.stack([low, high]), 0.0),
            capsize=2,
            label=name,
        )
    ax.set_xticks(np.arange(len(conditions)) + 0.4 - width / 2, conditions)
    ax.set_ylabel(metric.label)
    ax.set_title("error bars: 95 % intervals", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    name = f"{metric.name}.png"
    save_figure(fig, out / name)
    return name


def write_report(workdir: pathlib.Path, spec: ReportSpec, paper: dict | None = None) -> str:
    """Derives the relative tables into results.json, writes WORKDIR/results.md and
    WORKDIR/plots/*.png; returns the results table.

    paper: the experiment's declared paper reference ({'source', 'system', 'reference',
    'relative': {condition: percent}}), or None for no "against the paper" section.
    """
    workdir = pathlib.Path(workdir)
    results = results_lib.add_relative(workdir, spec.references, {m.name: m.lower_is_better for m in spec.metrics})
    table = results_table(results, spec)
    plots = workdir / "plots"
    images = [_plot_metric(results, spec, m, plots) for m in spec.metrics] if results else []
    images += _plot_training_curves(workdir, spec, plots)
    text = "# Results\n\n" + (spec.description + "\n\n" if spec.description else "") + table
    if conditions := conditions_table(results, spec):
        text += "\n## Test conditions\n\n" + conditions
    if paper:
        text += "\n## Against the paper\n\n" + paper_tables(results, spec, paper)
    text += "\n"
    for image in filter(None, images):
        text += f"![{image}](plots/{image})\n\n"
    for section in spec.extra_sections:
        if (workdir / section).exists():
            text += (workdir / section).read_text().rstrip() + "\n\n"
    wd.write_text(workdir / "results.md", text)
    return table
