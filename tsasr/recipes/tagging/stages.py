"""The `tagging` recipe's stages.

    corpus (data) -> teacher (train) -> student_<size> (train, one per size: its methods on the
    loop's members axis, the frozen teacher inside the step) -> score (evaluate)

`score` writes every system's micro-/macro-AUPRC with bootstrap intervals into results.json,
`score/iusp_gains.md` (per size, the SP and IUSP gains over no distillation and their ratio
beside the paper's 1.27-2.22) and `score/auprc_vs_size.png`.
"""

from __future__ import annotations

import functools
import logging
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from tsasr import workdir as wd
from tsasr.audio import lfbe
from tsasr.data import batching
from tsasr.evaluate import report, results
from tsasr.pipeline import Stage
from tsasr.recipes.tagging import corpus, losses, metrics, models
from tsasr.recipes.tagging.config import CLASSES
from tsasr.train import checkpoint, loop
from tsasr.train.config import network_train_config

log = logging.getLogger(__name__)
KEYS = {"features": batching.FRAME, "labels": batching.CLIP}
PAPER_RATIO = (1.271, 2.224)  # IUSP gain / SP gain over no distillation across the paper's student sizes


# ---------------------------------------------------------------- data


def _features(audios: list[np.ndarray], batch_size: int = 16) -> np.ndarray:
    """[clips, frames, 64] log-mel of equal-length clips, one jitted shape."""
    fn = jax.jit(lfbe.lfbe)
    samples = audios[0].size
    out = []
    for start in range(0, len(audios), batch_size):
        chunk = np.zeros((batch_size, samples), np.float32)
        rows = audios[start : start + batch_size]
        chunk[: len(rows)] = np.stack(rows)
        feats, _ = fn(chunk, np.zeros_like(chunk))
        out.append(np.asarray(feats)[: len(rows)])
    return np.concatenate(out)


def _fit(audio: np.ndarray, samples: int) -> np.ndarray:
    return audio[:samples] if audio.size >= samples else np.pad(audio, (0, samples - audio.size))


def make_corpus(config, workdir: pathlib.Path) -> dict:
    cfg = config.data
    samples = int(cfg.seconds * corpus.RATE)
    if cfg.source == "builtin":
        clips = corpus.builtin(cfg, config.seed)
    elif cfg.source == "sonyc":
        from tsasr.audio import io

        clips = corpus.read_sonyc(cfg.sonyc_dir, cfg.sonyc_audio, cfg.sonyc_splits.to_dict(), cfg.agreement)
        for clip in clips:
            clip["audio"] = io.read_audio(clip["audio"])
    else:
        raise ValueError(f"config.data.source must be 'builtin' or 'sonyc', got {cfg.source!r}")
    summary = {}
    stats = None
    for split in ("train", "test"):
        rows = [c for c in clips if c["split"] == split]
        if not rows:
            raise ValueError(f"corpus: no clips in the {split} split")
        feats = _features([_fit(c["audio"], samples) for c in rows])
        if stats is None:  # normalise every split with the training split's per-band mean and std
            stats = feats.mean((0, 1)), feats.std((0, 1)) + 1e-5
        feats = ((feats - stats[0]) / stats[1]).astype(np.float32)
        wd.write_npz(
            workdir / "corpus" / f"{split}.npz",
            {
                "ids": np.asarray([c["id"] for c in rows]),
                "sensors": np.asarray([c["sensor"] for c in rows]),
                "features": feats,
                "labels": np.stack([c["labels"] for c in rows]).astype(np.float32),
                "truth": np.stack([c["truth"] for c in rows]).astype(np.float32),
            },
        )
        if split == "train":
            for c in rows[:4]:  # a few examples to listen to
                wd.write_audio(workdir / "corpus" / "examples" / f"{c['id']}.wav", _fit(c["audio"], samples))
        summary[split] = {
            "clips": len(rows),
            "sensors": len({c["sensor"] for c in rows}),
            "class_rate": dict(zip(CLASSES, np.round(np.mean([c["truth"] for c in rows], 0), 3).tolist())),
            "label_noise_rate": float(np.mean([np.any(c["labels"] != c["truth"]) for c in rows])),
        }
    summary["frames"] = int(feats.shape[1])
    wd.write_json(workdir / "corpus" / "summary.json", summary)
    return summary


def _split(workdir, split):
    data = np.load(workdir / "corpus" / f"{split}.npz")
    return {k: data[k] for k in data.files}


def _examples(data) -> list[dict]:
    return [
        {"id": str(i), "features": f, "labels": y} for i, f, y in zip(data["ids"], data["features"], data["labels"])
    ]


# ---------------------------------------------------------------- models


def teacher_model(config):
    return models.build("cnn", config.teacher.channels, num_classes=len(CLASSES))


def student_model(config, size: str):
    s = config.student.sizes[size]
    return models.build(s.kind, s.channels, s.lstm_units, num_classes=len(CLASSES))


def _abstract_params(model, dim: int = 64, members: int = 0):
    def init(rng):
        return model.init({"params": rng, "dropout": rng}, jnp.zeros((1, 12, dim)), jnp.zeros((1, 12)))["params"]

    if members:
        return jax.eval_shape(lambda: jax.vmap(init)(jax.random.split(jax.random.PRNGKey(0), members)))
    return jax.eval_shape(lambda: init(jax.random.PRNGKey(0)))


def _train_config(config, section):
    return network_train_config(config, section)


def train_teacher(config, workdir: pathlib.Path) -> dict:
    data = _split(workdir, "train")
    frames = int(data["features"].shape[1])
    batcher = batching.Batcher(
        _examples(data), batching.BatchingConfig(config.teacher.batch_size, (frames,), config.seed, keys=KEYS)
    )
    model = teacher_model(config)
    wd.write_json(workdir / "teacher" / "model.json", {"kind": "cnn", "channels": list(config.teacher.channels)})
    state = loop.train(
        _train_config(config, config.teacher), model, losses.make_loss(model), batcher, str(workdir / "teacher")
    )
    return {"steps": int(state.step)}


def member_inputs(config) -> dict:
    """Per-member loss weights: method m of config.student.methods gets w_kd, w_sp, w_iusp."""
    s = config.student
    table = {
        "bce": (0.0, 0.0, 0.0),
        "kd": (s.kd_weight, 0.0, 0.0),
        "kd_sp": (s.kd_weight, s.sp_weight, 0.0),
        "kd_iusp": (s.kd_weight, 0.0, s.iusp_weight),
    }
    unknown = [m for m in s.methods if m not in table]
    if unknown:
        raise ValueError(f"config.student.methods: unknown {unknown}; known {sorted(table)}")
    weights = np.asarray([table[m] for m in s.methods], np.float32)
    return {"w_kd": weights[:, 0], "w_sp": weights[:, 1], "w_iusp": weights[:, 2]}


def load_teacher(config, workdir):
    model = teacher_model(config)
    params = checkpoint.load_params(str(workdir / "teacher" / "checkpoints"), _abstract_params(model))
    return model, params


def train_student(size: str, config, workdir: pathlib.Path) -> dict:
    data = _split(workdir, "train")
    frames = int(data["features"].shape[1])
    batcher = batching.Batcher(
        _examples(data), batching.BatchingConfig(config.student.batch_size, (frames,), config.seed, keys=KEYS)
    )
    teacher, frozen = load_teacher(config, workdir)
    model = student_model(config, size)
    loss_fn = losses.make_loss(
        model, teacher, bce_weight=config.student.bce_weight, temperature=config.student.temperature
    )
    methods = tuple(config.student.methods)
    out = workdir / f"student_{size}"
    wd.write_json(out / "model.json", {**config.student.sizes[size].to_dict(), "methods": list(methods)})
    state = loop.train(
        _train_config(config, config.student),
        model,
        loss_fn,
        batcher,
        str(out),
        frozen=frozen,
        members=loop.Members(methods, member_inputs(config)),
    )
    return {"steps": int(np.ravel(jax.device_get(state.step))[0]), "methods": list(methods)}


# ---------------------------------------------------------------- evaluation


def _probabilities(model, params, features, batch_size, stacked: bool) -> np.ndarray:
    """sigmoid(logits) [members?, clips, classes] over fixed-shape batches (one compile)."""

    def one(p, x):
        return jax.nn.sigmoid(model.apply({"params": p}, x, jnp.zeros(x.shape[:2]), train=False)[0]["logits"])

    fn = jax.jit(jax.vmap(one, in_axes=(0, None)) if stacked else one)
    out = []
    for start in range(0, len(features), batch_size):
        chunk = np.zeros((batch_size,) + features.shape[1:], np.float32)
        rows = features[start : start + batch_size]
        chunk[: len(rows)] = rows
        out.append(np.asarray(fn(params, chunk))[..., : len(rows), :])
    return np.concatenate(out, axis=-2)


def _num_params(tree, members: int = 0) -> int:
    return int(sum(x.size for x in jax.tree.leaves(tree)) // max(members, 1))


def score(config, workdir: pathlib.Path) -> dict:
    test = _split(workdir, "test")
    truth, features = test["truth"], test["features"]
    draws = metrics.bootstrap_draws(len(truth), config.score.replications, config.seed)
    minimum = config.score.min_threshold
    boot = {}
    sizes = {}
    rows = {}

    def record(system, probs, params):
        values = metrics.score_all(probs, truth, minimum)
        boots = {
            name: metrics.bootstrap(functools.partial(fn, min_threshold=minimum), probs, truth, draws)
            for name, fn in metrics.METRICS.items()
        }
        boot[system] = boots
        intervals = {name: {"test": metrics.interval(v)} for name, v in boots.items()}
        results.update_results(
            workdir,
            system,
            {name: {"test": v} for name, v in values.items()},
            {"ci": intervals, "params": params},
        )
        rows[system] = {**values, "params": params}

    teacher, teacher_params = load_teacher(config, workdir)
    record(
        "teacher",
        _probabilities(teacher, teacher_params, features, config.score.batch_size, False),
        _num_params(teacher_params),
    )
    methods = tuple(config.student.methods)
    for size in config.student.sizes:
        model = student_model(config, size)
        abstract = _abstract_params(model, members=len(methods))
        params = checkpoint.load_params(str(workdir / f"student_{size}" / "checkpoints"), abstract)
        probs = _probabilities(model, params, features, config.score.batch_size, True)
        sizes[size] = _num_params(params, len(methods))
        for m, method in enumerate(methods):
            record(f"student_{size}_{method}", probs[m], sizes[size])
    gains = gain_table(config, rows, boot, sizes)
    wd.write_text(workdir / "score" / "iusp_gains.md", gains["markdown"])
    wd.write_json(workdir / "score" / "gains.json", gains["rows"])
    _plot(config, rows, workdir)
    return {"systems": len(rows), "gains": gains["rows"]}


def gain_table(config, rows, boot, sizes) -> dict:
    """Per size: micro-AUPRC gains of kd_sp and kd_iusp over bce (paired bootstrap intervals) and IUSP/SP."""
    out = []
    lines = [
        "## IUSP vs SP: gains over no distillation (micro-AUPRC, test)",
        "",
        (
            "Gain = micro-AUPRC(student + KD + SP or IUSP) - micro-AUPRC(student, BCE only); 95 % paired bootstrap"
            " intervals over test clips in brackets. Ratio = IUSP gain / SP gain; the paper reports IUSP's gain"
            f" {100 * (PAPER_RATIO[0] - 1):.1f}-{100 * (PAPER_RATIO[1] - 1):.1f} % larger than SP's"
            f" (ratio {PAPER_RATIO[0]:.2f}-{PAPER_RATIO[1]:.2f}). A ratio is only meaningful where SP's gain is"
            " positive."
        ),
        "",
        "| size | params | BCE | KD gain | SP gain | IUSP gain | IUSP - SP | ratio IUSP/SP | paper ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    methods = set(config.student.methods)
    if not {"bce", "kd_sp", "kd_iusp"} <= methods:
        return {"markdown": "\n".join(lines[:2]) + "(needs methods bce, kd_sp and kd_iusp)\n", "rows": out}
    for size in config.student.sizes:
        base = f"student_{size}_bce"

        def gain(method, size=size, base=base):
            name = f"student_{size}_{method}"
            if name not in rows:
                return None, None
            value = rows[name]["micro_auprc"] - rows[base]["micro_auprc"]
            return value, metrics.interval(boot[name]["micro_auprc"] - boot[base]["micro_auprc"])

        kd, kd_ci = gain("kd")
        sp, sp_ci = gain("kd_sp")
        iu, iu_ci = gain("kd_iusp")
        diff_ci = metrics.interval(
            boot[f"student_{size}_kd_iusp"]["micro_auprc"] - boot[f"student_{size}_kd_sp"]["micro_auprc"]
        )
        ratio = iu / sp if sp and sp > 0 else None
        out.append(
            {
                "size": size,
                "params": sizes[size],
                "bce": rows[base]["micro_auprc"],
                "kd_gain": kd,
                "sp_gain": sp,
                "sp_gain_ci": sp_ci,
                "iusp_gain": iu,
                "iusp_gain_ci": iu_ci,
                "iusp_minus_sp_ci": diff_ci,
                "ratio": ratio,
            }
        )
        fmt = lambda v, ci: "–" if v is None else f"{v:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]"
        lines.append(
            f"| {size} | {sizes[size]} | {rows[base]['micro_auprc']:.3f} | {fmt(kd, kd_ci)} | {fmt(sp, sp_ci)} | "
            f"{fmt(iu, iu_ci)} | {fmt(iu - sp, diff_ci)} | {'–' if ratio is None else f'{ratio:.2f}'} | "
            f"{PAPER_RATIO[0]:.2f}-{PAPER_RATIO[1]:.2f} |"
        )
    wins = sum(r["iusp_gain"] > r["sp_gain"] for r in out)
    lines += [
        "",
        f"IUSP beats SP at {wins} of {len(out)} sizes here.",
        "",
        "![micro-AUPRC against student size](score/auprc_vs_size.png)",
        "",
    ]
    return {"markdown": "\n".join(lines), "rows": out}


def _plot(config, rows, workdir):
    plt = report.pyplot()

    table = results.read(workdir)["systems"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    sizes = list(config.student.sizes)
    for k, method in enumerate(config.student.methods):
        xs, ys, errs = [], [], [[], []]
        for size in sizes:
            name = f"student_{size}_{method}"
            if name not in table:
                continue
            value = table[name]["micro_auprc"]["test"]
            low, high = table[name]["ci"]["micro_auprc"]["test"]
            xs.append(rows[name]["params"] * (1 + 0.04 * (k - 1.5)))
            ys.append(value)
            errs[0].append(value - low)
            errs[1].append(high - value)
        ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=method)
    ax.axhline(table["teacher"]["micro_auprc"]["test"], color="k", linestyle="--", label="teacher")
    ax.set_xscale("log")
    ax.set_xlabel("student parameters")
    ax.set_ylabel("micro-AUPRC (test)")
    ax.legend()
    fig.tight_layout()
    report.save_figure(fig, workdir / "score" / "auprc_vs_size.png")


# ---------------------------------------------------------------- the chain


def stages(config) -> tuple[Stage, ...]:
    student_fields = (
        "student.methods",
        "student.batch_size",
        "student.bce_weight",
        "student.kd_weight",
        "student.sp_weight",
        "student.iusp_weight",
        "student.temperature",
        "student.train",
    )
    chain = [
        Stage("corpus", make_corpus, ("seed", "data"), outputs=("corpus",)),
        Stage("teacher", train_teacher, ("seed", "teacher"), deps=("corpus",), outputs=("teacher",), kind="train"),
    ]
    systems = ["teacher"]
    for size in config.student.sizes:
        chain.append(
            Stage(
                f"student_{size}",
                functools.partial(train_student, size),
                ("seed", f"student.sizes.{size}") + student_fields,
                deps=("corpus", "teacher"),
                outputs=(f"student_{size}",),
                kind="train",
            )
        )
        systems += [f"student_{size}_{m}" for m in config.student.methods]
    chain.append(
        Stage(
            "score",
            score,
            ("seed", "score", "student.sizes", "student.methods", "teacher.channels"),
            deps=tuple(s.name for s in chain[1:]),
            outputs=("score",),
            kind="evaluate",
            systems=tuple(systems),
        )
    )
    return tuple(chain)
