"""The wakeword recipe's stages and report.

corpus (data) -> features (data) -> <system> (train, one per stage-1 system)
  -> stage2 (train: the second-stage classifiers, on dev detections) -> evaluate (evaluate)

`evaluate` scores every system on the test split, clean and noisy (and the user's recordings
as condition `user` when given): DET curves (plots/det_<condition>.png), `frr_at_fa`,
`fa_per_hour_at_frr`, `det_area` with bootstrap intervals into results.json, and
evaluate/paper.md, this run's relative changes beside the papers'.
"""

from __future__ import annotations

import math
import pathlib

import numpy as np

from tsasr import workdir as wd
from tsasr.evaluate import report as report_lib
from tsasr.evaluate import results
from tsasr.pipeline import Stage
from tsasr.recipes.wakeword import corpus as corpus_lib
from tsasr.recipes.wakeword import det as det_lib
from tsasr.recipes.wakeword import features as feats_lib
from tsasr.recipes.wakeword import spotter
from tsasr.recipes.wakeword import stage2 as stage2_lib


def _split_items(workdir, split):
    records = corpus_lib.read(workdir, split)
    return [r for r in records if r["kind"] == "positive"], [r for r in records if r["kind"] == "stream"]


def _window(record, tolerance_s: float) -> tuple[int, int]:
    return feats_lib.frame_of(record["wake_start"]), feats_lib.frame_of(record["wake_end"] + tolerance_s)


def _scored(config, workdir, system, split, condition, cache={}):  # noqa: B006 (per-process memo)
    key = (str(workdir), system, split, condition)
    if key not in cache:
        background, front_end = spotter.parse(system)
        model, params = spotter.load(config, workdir, system)
        x = feats_lib.load(workdir, split, condition, front_end)
        lp = spotter.log_posteriors(model, params, x)
        cache.clear()  # one at a time: they are large
        cache[key] = (lp, spotter.scores(workdir, background, lp))
    return cache[key]


def _stage1_det(scored, positives, streams, ev) -> det_lib.Det:
    best = np.array(
        [
            float(np.max(scored[r["id"]][0][a : b + 1], initial=-np.inf))
            for r in positives
            for a, b in [_window(r, ev.tolerance)]
        ]
    )
    thresholds = det_lib.thresholds_for(best)
    alarms = (
        np.stack([det_lib.count_alarms(scored[r["id"]][0], thresholds, ev.debounce) for r in streams])
        if streams
        else np.zeros((0, thresholds.size))
    )
    hours = np.array([r["duration"] / 3600 for r in streams])
    return det_lib.det_curve(best, alarms, hours, thresholds)


def _candidates(config, workdir, system, scored, posteriors, threshold, positives, streams, ev):
    """Stage-1 detections at `threshold`: (features, labels 1/0, owner index, is_positive)."""
    keyword, _ = spotter.background_ids(workdir, spotter.parse(system)[0])
    spp = int(config.spotter.states_per_phone)
    rows, labels, owners, positive = [], [], [], []
    for kind, items in (("positive", positives), ("stream", streams)):
        sub = {r["id"]: scored[r["id"]] for r in items}
        index = {r["id"]: i for i, r in enumerate(items)}
        windows = {r["id"]: _window(r, ev.tolerance) for r in positives}
        for key, alarm, peak in stage2_lib.detections(sub, threshold, ev.debounce, config.stage2.peak_frames):
            if kind == "positive":
                a, b = windows[key]
                if not a <= alarm <= b:
                    continue  # outside the wake word (e.g. in the request): not scored on positives
            rows.append((key, alarm, peak))
            labels.append(1 if kind == "positive" else 0)
            owners.append(index[key])
            positive.append(kind == "positive")
    x = stage2_lib.candidate_features(scored, posteriors, rows, keyword, spp)
    return x, np.asarray(labels, int), np.asarray(owners, int), np.asarray(positive, bool)


def train_stage2(config, workdir: pathlib.Path) -> dict:
    ev, summary = config.evaluate, {}
    positives, streams = _split_items(workdir, "dev")
    for system in config.stage2.systems:
        xs, ys = [], []
        best = []
        for condition in ("clean", "noisy"):
            _, scored = _scored(config, workdir, system, "dev", condition)
            best += [
                float(np.max(scored[r["id"]][0][a : b + 1])) for r in positives for a, b in [_window(r, ev.tolerance)]
            ]
        best = np.sort(best)
        theta1 = float(best[math.floor(config.stage2.first_stage_frr / 100 * len(best))])
        for condition in ("clean", "noisy"):
            lp, scored = _scored(config, workdir, system, "dev", condition)
            x, y, _, _ = _candidates(config, workdir, system, scored, lp, theta1, positives, streams, ev)
            xs.append(x)
            ys.append(y)
        x, y = np.concatenate(xs), np.concatenate(ys)
        if len(set(y.tolist())) < 2:  # all one class (a tiny run): a constant classifier
            model = {
                "mean": [0.0] * x.shape[1],
                "std": [1.0] * x.shape[1],
                "coef": [0.0] * x.shape[1],
                "intercept": 0.0,
            }
        else:
            model = stage2_lib.fit(x, y, config.stage2.c, config.seed)
        model.update({"theta1": theta1, "positives": int(y.sum()), "negatives": int((1 - y).sum())})
        wd.write_json(workdir / "stage2" / f"{system}.json", model)
        summary[system] = {
            "theta1": round(theta1, 3),
            "dev_detections": {"wake word": int(y.sum()), "false": int((1 - y).sum())},
        }
    return summary


def _stage2_det(config, workdir, system, model, scored, lp, positives, streams, ev) -> det_lib.Det:
    x, _, owners, positive = _candidates(config, workdir, system, scored, lp, model["theta1"], positives, streams, ev)
    p = stage2_lib.predict(model, x) if len(x) else np.zeros(0)
    best = np.full(len(positives), -np.inf)
    for o, v in zip(owners[positive], p[positive]):
        best[o] = max(best[o], v)
    thresholds = det_lib.thresholds_for(best)
    alarms = np.zeros((len(streams), thresholds.size), np.int64)
    for o, v in zip(owners[~positive], p[~positive]):
        alarms[o] += v >= thresholds
    hours = np.array([r["duration"] / 3600 for r in streams])
    return det_lib.det_curve(best, alarms, hours, thresholds)


def _conditions(workdir) -> list[tuple[str, str, str]]:
    """(condition name, split, features condition) scored."""
    out = [("clean", "test", "clean"), ("noisy", "test", "noisy")]
    if (workdir / "features" / "user_clean.npz").exists():
        out.append(("user", "user", "clean"))
    if (workdir / "features" / "user_noisy.npz").exists():
        out.append(("user_noisy", "user", "noisy"))
    return out


def evaluate(config, workdir: pathlib.Path) -> dict:
    ev = config.evaluate
    curves, summary = {}, {}
    for name, split, condition in _conditions(workdir):
        positives, streams = _split_items(workdir, split)
        results.update_conditions(
            workdir,
            {
                name: {
                    "positives": len(positives),
                    "negative_hours": round(sum(r["duration"] for r in streams) / 3600, 4),
                }
            },
        )
        for system in config.spotter.systems:
            lp, scored = _scored(config, workdir, system, split, condition)
            dets = {system: _stage1_det(scored, positives, streams, ev)}
            if system in config.stage2.systems:
                model = _read_json(workdir / "stage2" / f"{system}.json")
                dets[f"{system}_stage2"] = _stage2_det(
                    config, workdir, system, model, scored, lp, positives, streams, ev
                )
            for row, det in dets.items():
                values = det_lib.summary(det, ev.target_fa_per_hour, ev.target_frr, ev.fa_max)
                ci = det_lib.bootstrap(
                    det, ev.target_fa_per_hour, ev.target_frr, ev.fa_max, ev.replications, config.seed
                )
                results.update_results(
                    workdir,
                    row,
                    {m: {name: v} for m, v in values.items()},
                    {
                        "ci": {m: {name: ci[m]} for m in values},
                        "parameters": spotter.read_model_json(workdir, system)["parameters"],
                    },
                )
                curves.setdefault(name, {})[row] = (det.fa_per_hour, det.frr)
                summary.setdefault(row, {})[name] = {k: round(v, 3) for k, v in values.items()}
    _plot(workdir, curves, ev.fa_max)
    _paper_section(workdir, config)
    return summary


def _read_json(path):
    import json

    return json.loads(pathlib.Path(path).read_text())


def _plot(workdir, curves, fa_max):
    plt = report_lib.pyplot()
    for condition, systems in curves.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for system, (fa, frr) in sorted(systems.items()):
            order = np.argsort(fa, kind="stable")
            ax.step(fa[order], 100 * np.minimum.accumulate(frr[order]), where="post", label=system)
        ax.set_xlim(0, 2 * fa_max)
        ax.set_xlabel("false alarms per hour")
        ax.set_ylabel("false rejection rate (%)")
        ax.set_title(f"DET, {condition}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        report_lib.save_figure(fig, workdir / "plots" / f"det_{condition}.png")


PAPER = (
    # (what, system, reference, metric, the paper's relative change in %)
    ("monophone vs filler background: FRR at fixed FA/h", "monophone_lfbe", "filler_lfbe", "frr_at_fa", -16.0),
    ("monophone vs filler background: FA/h at fixed FRR", "monophone_lfbe", "filler_lfbe", "fa_per_hour_at_frr", -37.0),
    ("stage 2: FA/h at fixed FRR", "monophone_lfbe_stage2", "monophone_lfbe", "fa_per_hour_at_frr", -67.0),
    ("DFT (TDB-HW) vs LFBE front-end: DET area", "monophone_dft", "monophone_lfbe", "det_area", -20.0),
    (
        "combined (DFT + stage 2) vs LFBE two-stage: DET area",
        "monophone_dft_stage2",
        "monophone_lfbe_stage2",
        "det_area",
        None,
    ),
    (
        "combined vs filler LFBE one-stage: FA/h at fixed FRR",
        "monophone_dft_stage2",
        "filler_lfbe",
        "fa_per_hour_at_frr",
        None,
    ),
    ("combined vs filler LFBE one-stage: DET area", "monophone_dft_stage2", "filler_lfbe", "det_area", None),
)


def _relative(new, old):
    if new is None or old is None or not (math.isfinite(new) and math.isfinite(old)):
        return "–"
    if old == 0:
        return "0 → 0" if new == 0 else f"0 → {new:.2f}"
    return f"{100 * (new - old) / old:+.0f} %"


def _paper_section(workdir, config):
    table = results.read(workdir).get("systems", {})
    ev = config.evaluate
    lines = [
        "## Against the papers (relative change, lower is better)",
        "",
        (
            f"Operating points fixed before any run: FRR at {ev.target_fa_per_hour:g} FA/h, FA/h at {ev.target_frr:g} % FRR, "
            f"DET area = mean FRR (%) over 0-{ev.fa_max:g} FA/h; debounce {ev.debounce} frames."
        ),
        "",
        "| comparison | paper | this run, clean | this run, noisy |",
        "|---|---:|---:|---:|",
    ]
    for what, system, reference, metric, paper in PAPER:
        if system not in table or reference not in table:
            continue
        cells = [
            _relative(table[system].get(metric, {}).get(c), table[reference].get(metric, {}).get(c))
            for c in ("clean", "noisy")
        ]
        lines.append(f"| {what} | {'–' if paper is None else f'{paper:+.0f} %'} | {cells[0]} | {cells[1]} |")
    wd.write_text(workdir / "evaluate" / "paper.md", "\n".join(lines) + "\n")


def stages(config):
    systems = tuple(config.spotter.systems)
    unknown = [s for s in config.stage2.systems if s not in systems]
    if unknown:
        raise ValueError(f"stage2.systems {unknown} are not in spotter.systems {list(systems)}")
    out = [
        Stage("corpus", corpus_lib.build, ("seed", "corpus"), outputs=("corpus",), inputs=_user_inputs),
        Stage(
            "features",
            feats_lib.build,
            ("seed", "noisy", "spotter.states_per_phone"),
            deps=("corpus",),
            outputs=("features",),
        ),
    ]
    for system in systems:
        out.append(
            Stage(
                system,
                lambda config, workdir, system=system: spotter.train(config, workdir, system),
                ("seed", "spotter"),
                deps=("features",),
                outputs=(system,),
                kind="train",
            )
        )
    out.append(
        Stage(
            "stage2",
            train_stage2,
            ("seed", "stage2", "evaluate.debounce", "evaluate.tolerance"),
            deps=systems,
            outputs=("stage2",),
            kind="train",
        )
    )
    rows = systems + tuple(f"{s}_stage2" for s in config.stage2.systems)
    out.append(
        Stage(
            "evaluate",
            evaluate,
            ("evaluate",),
            deps=("stage2",) + systems,
            outputs=("evaluate",),
            kind="evaluate",
            systems=rows,
        )
    )
    return tuple(out)


def _user_inputs(config) -> dict:
    from tsasr.data import fingerprint

    path = config.corpus.user_manifest
    return {"user_manifest": fingerprint.manifest(path)} if path else {}


REPORT = report_lib.ReportSpec(
    metrics=(
        report_lib.Metric("frr_at_fa", "FRR (%) at fixed FA/h"),
        report_lib.Metric("fa_per_hour_at_frr", "FA/h at fixed FRR"),
        report_lib.Metric("det_area", "DET area (mean FRR %)"),
    ),
    conditions=("clean", "noisy"),
    system_order=(
        "filler_lfbe",
        "monophone_lfbe",
        "monophone_lfbe_stage2",
        "monophone_dft",
        "monophone_dft_stage2",
    ),
    references=("filler_lfbe", "monophone_lfbe"),
    curves=("loss", "frame_accuracy"),
    description=(
        "Two-stage wake-word detection (wake word 'computer'): a DNN-HMM spotter with a monophone or "
        "filler background, LFBE or a trainable DFT front-end (TDB-HW) at matched parameters, and a "
        "logistic-regression second stage on the stage-1 alignment. Operating points: see the papers' section."
    ),
    extra_sections=("evaluate/paper.md",),
)
