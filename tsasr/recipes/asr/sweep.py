"""A k x T sweep of students trained together in one loop, then decoded and tabulated.

The students of a grid share everything but their targets: the same architecture, the same
noisy batches, the same stored soft labels (labels are stored once at the largest k, and
every k' <= k and temperature T is derived when read). So they train as members of one
tsasr.train.loop run: their parameters are stacked along a leading member axis and one
jitted step, a `jax.vmap` of the ordinary single-student update, trains all of them on each
batch, which is read and transferred once. k and T are per-member step inputs, not Python
constants:

    p_m(s | t) = softmax(where(arange(K) < k_m, logits_t / T_m, -inf))

is the teacher's top-k_m at temperature T_m renormalised over the kept ids, exactly the
targets of tsasr.losses.soft_targets(logits, k_m, T_m) padded with zeros to the stored K
(tsasr.recipes.asr.objectives.masked_soft_targets), so a different grid of the same size
reuses the compiled step.

Member m is initialised from fold_in(init_key, m) and its dropout key at step s is
fold_in(fold_in(step_key, m), s). Stage `sweep` trains; evaluation stage `decode_sweep`
decodes every member on every test condition as system `student_ce_k{k}_T{T:g}` and writes
the sweep table (WORKDIR/sweep_k_T.md) and plot (WORKDIR/plots/sweep_k_T.png: WER against
k, one line per T, one panel per test condition). Hard labels (k = 1) are the same targets
at every T.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import time

import jax
import numpy as np

from tsasr import pipeline
from tsasr import workdir as wd
from tsasr.data import batching
from tsasr.data import layout
from tsasr.distill import soft_labels as sl
from tsasr.evaluate import report as report_lib
from tsasr.evaluate import results as results_lib
from tsasr.models import build_model
from tsasr.recipes.asr import acoustic
from tsasr.recipes.asr import evaluate
from tsasr.recipes.asr.grid import Member, grid_arrays, parse_grid  # noqa: F401  (Member: part of this module's API)
from tsasr.recipes.asr import student
from tsasr.recipes.asr import teacher as teacher_stage
from tsasr.train import checkpoint as checkpoint_lib
from tsasr.train import loop
from tsasr.train.config import network_train_config

STAGE = "sweep"  # training stage name (its marker is WORKDIR/.stages/sweep.json)
OUTPUT = "sweep"  # WORKDIR/sweep: stacked checkpoints, per-member metrics, grid.json
PLOT = "sweep_k_T.png"
TABLE = "sweep_k_T.md"
CONDITIONS = tuple(layout.CONDITIONS)
log = logging.getLogger(__name__)


def sweep_table(systems: dict, members) -> str:
    """Markdown: per test condition, WER (%) with k down and T across ('–' = not in the grid)."""
    ks = sorted({m.top_k for m in members})
    temperatures = sorted({m.temperature for m in members if m.top_k > 1}) or sorted({m.temperature for m in members})
    lines = []
    for condition in CONDITIONS:
        if not any(condition in systems.get(m.system, {}).get("wer", {}) for m in members):
            continue
        lines += [
            f"### WER {condition} (%)",
            "",
            "| k | " + " | ".join(f"T = {t:g}" for t in temperatures) + " |",
            "|---:|" + "---:|" * len(temperatures),
        ]
        for k in ks:
            cells = []
            for t in temperatures:
                # k = 1 targets are one-hot at every T: the hard-label baseline fills its row.
                found = [m for m in members if m.top_k == k and (m.temperature == t or k == 1)]
                wer = systems.get(found[0].system, {}).get("wer", {}).get(condition) if found else None
                cells.append("–" if wer is None else f"{wer:.2f}")
            lines.append(f"| {k}{' (hard labels)' if k == 1 else ''} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) if lines else "No sweep member has been scored yet.\n"


def plot_sweep(systems: dict, members, path: pathlib.Path) -> None:
    """WER against k, one line per T, one panel per test condition; written atomically."""
    plt = report_lib.pyplot()

    conditions = [c for c in CONDITIONS if any(c in systems.get(m.system, {}).get("wer", {}) for m in members)]
    fig, axes = plt.subplots(1, max(len(conditions), 1), figsize=(4.2 * max(len(conditions), 1), 3.6), squeeze=False)
    temperatures = sorted({m.temperature for m in members if m.top_k > 1})
    hard = [m for m in members if m.top_k == 1]
    for ax, condition in zip(axes[0], conditions):
        wer = lambda m: systems.get(m.system, {}).get("wer", {}).get(condition, np.nan)  # noqa: E731
        for t in temperatures:
            line = sorted((m for m in members if m.temperature == t and m.top_k > 1), key=lambda m: m.top_k)
            ax.plot([m.top_k for m in line], [wer(m) for m in line], marker="o", label=f"T = {t:g}")
        if hard:
            ax.axhline(wer(hard[0]), color="grey", linestyle="--", label="hard labels (k = 1)")
        ax.set_xscale("log", base=2)
        ks = sorted({m.top_k for m in members if m.top_k > 1})
        if ks:
            ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("k (teacher senones kept per frame)")
        ax.set_ylabel("WER (%)")
        ax.set_title(condition)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    report_lib.save_figure(fig, path)


def members_of(members) -> loop.Members:
    """The loop's member axis: one member per grid point, its k and T as step inputs."""
    return loop.Members(tuple(m.system for m in members), grid_arrays(members))


def run(config, workdir: pathlib.Path) -> dict:
    """Training stage `sweep`: trains config.sweep.points together."""
    cfg = config.student
    workdir = pathlib.Path(workdir)
    out = workdir / OUTPUT
    reader = sl.SoftLabelReader(workdir / "labels")
    members = parse_grid(config.sweep.points, stored_k=reader.k)
    wd.write_json(out / "grid.json", [dataclasses.asdict(m) | {"system": m.system} for m in members])

    if cfg.input != "memory" or cfg.noisify != "stored":
        log.warning(
            "sweep: its members train together on the stored noisy copies from host memory; "
            "student.input=%r and student.noisify=%r apply to the student stages only",
            cfg.input,
            cfg.noisify,
        )
    records = [r for split in student.SPLITS for r in acoustic.read(workdir, split)]
    features = acoustic.compute_features(records, "sweep: noisy features")
    is_held = {r["id"]: teacher_stage.heldout(r.get("clean_id", r["id"]), cfg.heldout_percent) for r in records}
    norm = acoustic.normalisation(
        {r["id"]: features[r["id"]] for r in records if not is_held[r["id"]]}, config.student.utterance_mean
    )
    features = acoustic.normalise(features, norm)
    # Every member reads the same examples at the stored K; its k and T select targets in the step.
    examples = student.soft_examples([r for r in records if not is_held[r["id"]]], features, reader, reader.k, 1.0)
    held = student.soft_examples([r for r in records if is_held[r["id"]]], features, reader, reader.k, 1.0)

    model_fields = {**cfg.model.to_dict(), "num_senones": reader.num_senones}
    model = build_model(model_fields)
    wd.write_json(out / "model.json", model_fields)
    wd.write_json(out / "norm.json", norm)
    train_cfg = network_train_config(config, cfg)
    train_cfg.feature_dim = int(examples[0]["features"].shape[1])
    batcher = batching.Batcher(
        examples, teacher_stage.batching_config(config, cfg), jax.process_index(), jax.process_count()
    )
    train_cfg.num_steps = loop.resolve_num_steps(train_cfg, batcher.batches_per_epoch, "sweep")
    loss_fn = teacher_stage.frame_loss(model, train_cfg)  # the soft-target branch, with each member's k and T
    started = time.perf_counter()
    state = loop.train(train_cfg, model, loss_fn, batcher, str(out), members=members_of(members))
    train_seconds = time.perf_counter() - started
    heldout = []
    if held:
        batches = batching.Batcher(held, teacher_stage.batching_config(config, cfg, drop_remainder=False)).epoch()
        heldout = loop.evaluate(model, state.params, loss_fn, batches, members=members_of(members))
    wd.write_json(
        out / "heldout.json",
        {
            m.system: {"heldout_loss": round(h["loss"], 4), "heldout_frame_accuracy": round(h["frame_accuracy"], 4)}
            for m, h in zip(members, heldout)
        },
    )
    return {
        "members": len(members),
        "steps": int(train_cfg.num_steps),
        "train_seconds": round(train_seconds, 1),
        "utterances": len(examples),
        "stored_k": reader.k,
    }


def load_members(workdir: pathlib.Path):
    """(model, stacked params, norm, members) of a trained sweep, read-only."""
    directory = pathlib.Path(workdir) / OUTPUT
    grid = json.loads((directory / "grid.json").read_text())
    members = parse_grid([{"top_k": g["top_k"], "temperature": g["temperature"]} for g in grid])
    model = build_model(json.loads((directory / "model.json").read_text()))
    norm = json.loads((directory / "norm.json").read_text())
    abstract = acoustic.abstract_params(model, len(norm["mean"]), members=len(members))
    params = checkpoint_lib.load_params(str(directory / "checkpoints"), abstract)
    return model, params, norm, members


def decode(config, workdir: pathlib.Path) -> dict:
    """Evaluation stage `decode_sweep`: every member decoded and scored, the table and the plot.

    Multi-host: every process decodes its share of each member's test sets
    (evaluate.decode_network); process 0 writes the rows, the table and the plot."""
    workdir = pathlib.Path(workdir)
    writes = pipeline.processes()[0] == 0
    model, params, norm, members = load_members(workdir)
    heldout = json.loads((workdir / OUTPUT / "heldout.json").read_text())
    reference = next((r for r in ("teacher_seq", "teacher_ce") if (workdir / layout.decoded(r)).exists()), None)
    for m, member in enumerate(members):
        evaluate.decode_network(config, workdir, member.system, model, loop.member_slice(params, m), norm, reference)
        extra = {"top_k": member.top_k, "temperature": member.temperature, **heldout.get(member.system, {})}
        if writes:
            results_lib.update_results(workdir, member.system, {}, extra)
    if not writes:
        return {"members": len(members)}
    systems = results_lib.read(workdir)["systems"]
    steps = json.loads((workdir / OUTPUT / "train_config.json").read_text())["train"]["num_steps"]
    wd.write_text(
        workdir / TABLE,
        f"## k x T sweep\n\nStudents trained together (one vmapped step), {steps} steps each; "
        f"intervals and relative changes against `{reference}` in results.json.\n\n"
        + sweep_table(systems, members)
        + f"\n![{PLOT}](plots/{PLOT})\n",
    )
    plot_sweep(systems, members, workdir / "plots" / PLOT)
    wers = {m.system: systems.get(m.system, {}).get("wer", {}) for m in members}
    best = min(wers, key=lambda s: wers[s].get("noisy", float("inf")))
    return {"members": len(members), "best_noisy": best, "wer": wers, "table": TABLE, "plot": f"plots/{PLOT}"}
