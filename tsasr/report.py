"""The end-of-run report: results.md and PNG plots from results.json and the metrics logs.

Reads only what stages wrote (results.json, <stage>/metrics.jsonl); rewrites results.md and
plots/ each time it runs, so it is cheap and always matches the workdir. It computes no WER.
"""

from __future__ import annotations

import json
import logging
import pathlib

from tsasr import workdir as wd

CONDITIONS = ("clean", "noisy", "rerecorded")
# Mosner et al. (ICASSP 2019), best student vs the sequence-trained teacher, relative WER change.
PAPER_RELATIVE = {"clean": -10.1, "noisy": -28.7, "rerecorded": -19.6}
SYSTEM_ORDER = (
    "gmm",
    "teacher_ce",
    "teacher_seq",
    "multicondition_ce",
    "multicondition_seq",
    "student_ce",
    "student_seq",
)
log = logging.getLogger(__name__)


def _ordered(systems: dict) -> list[str]:
    known = [s for s in SYSTEM_ORDER if s in systems]
    return known + sorted(s for s in systems if s not in SYSTEM_ORDER)


def _fmt(value, spec: str = ".2f") -> str:
    return "–" if value is None else format(value, spec)


def results_table(results: dict) -> str:
    """Markdown: WER per system and condition, and the change relative to the teacher."""
    systems = results.get("systems", {})
    relative = results.get("relative_to_teacher", {})
    if not systems:
        return "No system has been scored yet.\n"
    lines = [
        "| system | "
        + " | ".join(f"WER {c} (%)" for c in CONDITIONS)
        + " | "
        + " | ".join(f"rel. {c} (%)" for c in CONDITIONS)
        + " |",
        "|---|" + "---:|" * (2 * len(CONDITIONS)),
    ]
    for name in _ordered(systems):
        wer = systems[name].get("wer", {})
        ci = systems[name].get("ci", {})
        cells = []
        for c in CONDITIONS:
            cell = _fmt(wer.get(c))
            if c in ci:
                cell += f" [{ci[c][0]:.1f}, {ci[c][1]:.1f}]"
            cells.append(cell)
        rel = [_fmt(relative.get(name, {}).get(c), "+.1f") for c in CONDITIONS]
        lines.append(f"| {name} | " + " | ".join(cells) + " | " + " | ".join(rel) + " |")
    return "\n".join(lines) + "\n"


def _plot_training_curves(workdir: pathlib.Path, out: pathlib.Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    for metrics in sorted(workdir.glob("*/metrics.jsonl")):
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        keys = [
            k
            for k in ("loss", "train_loss", "objective", "dev_loss", "dev_frame_accuracy")
            if any(k in r for r in rows)
        ]
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
        with wd.atomic_path(out / name) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
        made.append(name)
    return made


def _plot_wer(results: dict, out: pathlib.Path) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    systems = results.get("systems", {})
    names = [n for n in _ordered(systems) if systems[n].get("wer")]
    if not names:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [systems[name]["wer"].get(c, np.nan) for c in CONDITIONS]
        ax.bar(np.arange(len(CONDITIONS)) + i * width, values, width, label=name)
    ax.set_xticks(np.arange(len(CONDITIONS)) + 0.4 - width / 2, CONDITIONS)
    ax.set_ylabel("WER (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with wd.atomic_path(out / "wer.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return "wer.png"


def write_report(workdir: pathlib.Path) -> str:
    """Writes WORKDIR/results.md and WORKDIR/plots/*.png; returns the results table."""
    workdir = pathlib.Path(workdir)
    path = workdir / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    table = results_table(results)
    plots = workdir / "plots"
    images = ([_plot_wer(results, plots)] if results else []) + _plot_training_curves(workdir, plots)
    paper = "| | " + " | ".join(CONDITIONS) + " |\n|---|" + "---:|" * len(CONDITIONS) + "\n"
    paper += (
        "| paper: best student vs sequence-trained teacher (rel. %) | "
        + " | ".join(f"{PAPER_RELATIVE[c]:+.1f}" for c in CONDITIONS)
        + " |\n"
    )
    ours = results.get("relative_to_teacher", {})
    best = min(ours, key=lambda s: ours[s].get("noisy", float("inf")), default=None) if ours else None
    if best and best.startswith("student"):
        paper += (
            f"| this run: {best} (rel. %) | " + " | ".join(_fmt(ours[best].get(c), "+.1f") for c in CONDITIONS) + " |\n"
        )
    text = (
        "# Results\n\nWER in percent per test condition; `rel.` is the relative change against the "
        "sequence-trained teacher (or the CE teacher before sequence training exists); brackets are "
        "95 % bootstrap intervals.\n\n" + table + "\n## Against the paper\n\n" + paper + "\n"
    )
    for image in filter(None, images):
        text += f"![{image}](plots/{image})\n\n"
    sweep_table = workdir / "sweep_k_T.md"  # written by the sweep stage (tsasr.distill.sweep)
    if sweep_table.exists():
        body = sweep_table.read_text().split("\n", 1)[1].replace("\n### ", "\n### Sweep: ")
        text += "## k x T sweep (from sweep_k_T.md)\n" + body.rstrip() + "\n\n"
        if (plots / "sweep_k_T.png").exists():
            text += "![sweep_k_T.png](plots/sweep_k_T.png)\n"
    wd.write_text(workdir / "results.md", text)
    return table
