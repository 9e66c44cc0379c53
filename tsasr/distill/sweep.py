"""A k x T sweep of students trained together in one compiled step, then decoded and plotted.

The students of a grid share everything but their targets: the same architecture, the same
noisy batches, the same stored soft labels (DESIGN.md: labels are stored once at the largest
k, and every k' <= k and temperature T is derived when read). So their parameters are
stacked along a leading member axis and one jitted step, a `jax.vmap` of the ordinary
single-student update (tsasr.train.step.make_train_step), trains all of them on each batch,
which is read and transferred once. k and T are per-member arrays, not Python constants:

    p_m(s | t) = softmax(where(arange(K) < k_m, logits_t / T_m, -inf))

is the teacher's top-k_m at temperature T_m renormalised over the kept ids, exactly the
targets of tsasr.losses.soft_targets(logits, k_m, T_m) padded with zeros to the stored K,
so a different grid of the same size reuses the compiled step.

Member m is initialised from fold_in(init_key, m) and its dropout key at step s is
fold_in(fold_in(step_key, m), s). After training, every member is decoded on every test
condition as system `student_ce_k{k}_T{T:g}`, and the sweep table (WORKDIR/sweep_k_T.md)
and plot (WORKDIR/plots/sweep_k_T.png: WER against k, one line per T, one panel per test
condition) are written. Hard labels (k = 1) are the same targets at every T.

This module owns the sweep stage; it does not label, and it does not change the single-student
trainer it vmaps.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tsasr import losses
from tsasr import workdir as wd
from tsasr.data import batching
from tsasr.distill import soft_labels as sl
from tsasr.distill import student
from tsasr.models import build_model, subsampling
from tsasr.train import acoustic
from tsasr.train import checkpoint as checkpoint_lib
from tsasr.train import metrics as metrics_lib
from tsasr.train import optim
from tsasr.train import sharding as sharding_lib
from tsasr.train import state as state_lib
from tsasr.train import step as step_lib
from tsasr.train import teacher as trainer

STAGE = "sweep"  # runner stage name (its marker is WORKDIR/.stages/sweep.json)
OUTPUT = "sweep"  # WORKDIR/sweep: stacked checkpoints, per-member metrics, grid.json
PLOT = "sweep_k_T.png"
TABLE = "sweep_k_T.md"
CONDITIONS = ("clean", "noisy", "rerecorded")
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Member:
    """One student of the grid: the teacher's top `top_k` senones at `temperature`."""

    top_k: int
    temperature: float

    @property
    def system(self) -> str:
        return f"student_ce_k{self.top_k}_T{self.temperature:g}"


def parse_grid(points, stored_k: int | None = None) -> tuple[Member, ...]:
    """Checks a grid (a list of {'top_k': int, 'temperature': float}) and returns its members.

    Raises ValueError naming the point on a missing or unknown field, a k that is not an
    integer in [1, stored_k], a temperature that is not a finite number > 0, or a duplicate.
    """
    if not isinstance(points, (list, tuple)) or not points:
        raise ValueError(
            f"sweep(): the grid must be a non-empty list of {{'top_k', 'temperature'}} points; got {points!r}"
        )
    members, seen = [], set()
    for i, point in enumerate(points):
        if not hasattr(point, "keys") or set(point.keys()) != {"top_k", "temperature"}:
            raise ValueError(f"sweep point {i} {point!r}: needs exactly the fields 'top_k' and 'temperature'")
        k, temperature = point["top_k"], point["temperature"]
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"sweep point {i}: top_k={k!r} must be an integer >= 1")
        if stored_k is not None and k > stored_k:
            raise ValueError(
                f"sweep point {i}: top_k={k} exceeds the k={stored_k} the soft labels were stored at "
                "(raise student.label_top_k)"
            )
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, (int, float, np.number))
            or not math.isfinite(temperature)
            or temperature <= 0
        ):
            raise ValueError(f"sweep point {i}: temperature={temperature!r} must be a finite number > 0")
        member = Member(int(k), float(temperature))
        if member.system in seen:
            raise ValueError(f"sweep point {i}: {member.system} appears twice in the grid")
        seen.add(member.system)
        members.append(member)
    return tuple(members)


def grid_arrays(members) -> dict[str, np.ndarray]:
    """{'top_k': int32 [members], 'temperature': float32 [members]}: the step's per-member inputs."""
    return {
        "top_k": np.asarray([m.top_k for m in members], np.int32),
        "temperature": np.asarray([m.temperature for m in members], np.float32),
    }


def masked_soft_targets(teacher_logits, top_k, temperature):
    """softmax(logits[..., :k] / T) padded with zeros to K, for traced k and T.

    Args:
      teacher_logits: [batch, frames, K] stored teacher logits, highest first.
      top_k: int scalar (may be traced), 1 <= top_k <= K.
      temperature: float scalar (may be traced), > 0.

    Returns:
      [batch, frames, K] float32 probabilities: the first top_k sum to 1, the rest are 0.
    """
    keep = jnp.arange(teacher_logits.shape[-1]) < top_k
    scaled = jnp.where(keep, teacher_logits.astype(jnp.float32) / temperature, -jnp.inf)
    return jax.nn.softmax(scaled, axis=-1)


def make_member_loss_fn(model, dtype=jnp.float32):
    """loss_fn(params, batch, rng, train) -> (loss, (accuracy, num_frames)) for one member.

    The batch is the shared batch (`features` [batch, frames, dim], `feature_paddings`,
    `soft_ids` and `soft_logits` [batch, frames, K]) plus this member's scalars `top_k` and
    `temperature`. The same formula as step_lib.make_loss_fn's soft-target branch, with the
    targets masked instead of sliced so that k may be traced.
    """
    factor = model.config.subsampling

    def loss_fn(params, batch, rng, train=True):
        features, paddings = batch["features"], batch["feature_paddings"]
        if dtype != jnp.float32:
            params = jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, params)
            features = features.astype(dtype)
        logits, out_paddings = model.apply({"params": params}, features, paddings, train=train, rngs={"dropout": rng})
        ids, _ = subsampling.subsample_targets(batch["soft_ids"], paddings, factor)
        teacher, _ = subsampling.subsample_targets(batch["soft_logits"], paddings, factor)
        probs = masked_soft_targets(teacher, batch["top_k"], batch["temperature"])
        loss, accuracy, frames = losses.soft_cross_entropy(logits, ids, probs, out_paddings)
        return loss, (accuracy, frames)

    return loss_fn


def _member_keys(rng, members: int):
    return jax.vmap(lambda m: jax.random.fold_in(rng, m))(jnp.arange(members))


def make_sweep_step(loss_fn, tx, schedule):
    """sweep_step(state, batch, grid, rng) -> (state, measurements), every leaf [members, ...].

    state: a TrainState whose leaves carry a leading member axis; batch: one shared batch;
    grid: grid_arrays(); rng: the run's base step key. Member m runs the ordinary
    single-student step (make_train_step) with the key fold_in(rng, m), so it equals that
    step applied to member m alone.
    """
    member_step = step_lib.make_train_step(loss_fn, tx, schedule)

    def sweep_step(state, batch, grid, rng):
        keys = _member_keys(rng, grid["top_k"].shape[0])

        def one(member_state, top_k, temperature, key):
            return member_step(member_state, {**batch, "top_k": top_k, "temperature": temperature}, key)

        return jax.vmap(one)(state, grid["top_k"], grid["temperature"], keys)

    return sweep_step


def make_sweep_eval_step(loss_fn):
    """sweep_eval(params, batch, grid) -> {loss_sum, correct_sum, num_frames}, each [members]."""
    member_eval = step_lib.make_eval_step(loss_fn)

    def sweep_eval(params, batch, grid):
        return jax.vmap(lambda p, k, t: member_eval(p, {**batch, "top_k": k, "temperature": t}))(
            params, grid["top_k"], grid["temperature"]
        )

    return sweep_eval


def jit_sweep_step(sweep_step, mesh):
    """jit with donated (stacked) state; state, grid, key and measurements replicated, batch on `data`."""
    replicated = sharding_lib.replicated(mesh)
    return jax.jit(
        sweep_step,
        donate_argnums=(0,),
        in_shardings=(replicated, sharding_lib.batch_sharding(mesh), replicated, replicated),
        out_shardings=(replicated, replicated),
    )


def make_init_fn(model, tx, members: int, feature_dim: int, init_rng):
    """() -> TrainState stacked over members; member m's params from fold_in(init_rng, m)."""

    def init_one(key):
        variables = model.init(
            {"params": key, "dropout": key},
            jnp.zeros((1, 12, feature_dim), jnp.float32),
            jnp.zeros((1, 12), jnp.float32),
        )
        return state_lib.create(variables["params"], tx)

    return lambda: jax.vmap(init_one)(_member_keys(init_rng, members))


def member_params(stacked, index: int):
    """Member `index`'s slice of a stacked tree (its params, or its whole TrainState)."""
    return jax.tree.map(lambda x: x[index], stacked)


def _signature(batch: dict):
    return tuple((k, v.shape, str(v.dtype)) for k, v in sorted(batch.items()))


def train(train_cfg, model, batcher, members, out: pathlib.Path, *, mesh=None):
    """Trains every member together; returns the stacked TrainState.

    train_cfg is a tsasr.train.config.train_config(); batcher yields batches with soft_ids
    and soft_logits at the stored K. Checkpoints (orbax, the whole stacked state) go to
    out/checkpoints and per-member metrics to out/members/<system>/metrics.jsonl.
    """
    out = pathlib.Path(out)
    mesh = mesh or sharding_lib.data_mesh()
    replicated = sharding_lib.replicated(mesh)
    tx, schedule = optim.make_optimizer(train_cfg.optimizer, train_cfg.num_steps)
    init_rng, step_rng = jax.random.split(jax.random.PRNGKey(train_cfg.seed))
    init_fn = make_init_fn(model, tx, len(members), train_cfg.feature_dim, init_rng)
    checkpoints = checkpoint_lib.Checkpoints(
        str(out / "checkpoints"), train_cfg.checkpoint_every, train_cfg.max_checkpoints
    )
    # Resume order: a checkpoint in this workdir (the stacked state of an interrupted sweep),
    # then from scratch; a stage whose grid changed starts from an empty directory.
    state = checkpoints.restore_or_init(jax.eval_shape(init_fn), replicated, jax.jit(init_fn, out_shardings=replicated))
    start = int(jax.device_get(state.step)[0])
    log.info(
        "sweep: %d students x %d parameters, starting at step %d of %d",
        len(members),
        sum(x[0].size for x in jax.tree.leaves(state.params)),
        start,
        train_cfg.num_steps,
    )
    loss_fn = make_member_loss_fn(model, step_lib.compute_dtype(train_cfg.compute_dtype))
    sweep_step = jit_sweep_step(make_sweep_step(loss_fn, tx, schedule), mesh)
    grid = jax.device_put(grid_arrays(members), replicated)
    writers = [metrics_lib.MetricsWriter(str(out / "members" / m.system), start) for m in members]
    batches = batching.prefetch(batcher(start), lambda b: sharding_lib.global_batch(b, mesh), train_cfg.prefetch)
    compiled, pending, window = {}, [], []
    window_start = time.perf_counter()

    def check_pending():
        """NaN guard and per-member metrics lines for dispatched steps."""
        nonlocal window_start
        while pending:
            step, ids, measurements = pending.pop(0)
            measurements = jax.device_get(measurements)
            for m, member in enumerate(members):
                try:
                    step_lib.check_finite(step, {k: v[m] for k, v in measurements.items()}, ids)
                except FloatingPointError as err:
                    raise FloatingPointError(f"sweep member {member.system}: {err}") from None
            window.append(measurements)
            if (step + 1) % train_cfg.log_every == 0 or step + 1 == train_cfg.num_steps:
                elapsed = time.perf_counter() - window_start
                for m, writer in enumerate(writers):
                    writer.write(step + 1, metrics_lib.window_summary(window, elapsed, member=m))
                window.clear()
                window_start = time.perf_counter()

    try:
        for step in range(start, train_cfg.num_steps):
            batch, ids = next(batches)
            signature = _signature(batch)
            if signature not in compiled:
                compiled[signature] = sweep_step.lower(state, batch, grid, step_rng).compile()
                cost = compiled[signature].cost_analysis() or {}
                log.info(
                    "sweep: compiled the step for %s: %.3g GFLOP per step for %d students",
                    {k: v[1] for k, v in zip(sorted(batch), signature)},
                    float(cost.get("flops", float("nan"))) / 1e9,
                    len(members),
                )
                window_start = time.perf_counter()
            state, measurements = compiled[signature](state, batch, grid, step_rng)
            pending.append((step, ids, measurements))
            due = train_cfg.checkpoint_every > 0 and (step + 1) % train_cfg.checkpoint_every == 0
            if step + 1 < train_cfg.num_steps and not due:
                # Check the previous step while this one runs, so the host never stalls the device.
                while len(pending) > 1:
                    last = pending.pop()
                    check_pending()
                    pending.append(last)
            else:
                check_pending()  # never save a state with NaNs
            checkpoints.save(step + 1, state)
        check_pending()
        checkpoints.save(train_cfg.num_steps, state, force=True)
    finally:
        batches.close()
        for writer in writers:
            writer.close()
        checkpoints.close()
    return state


def evaluate(model, params, batches, members, *, mesh=None) -> list[dict]:
    """Per member {'loss', 'frame_accuracy', 'num_frames'} over finite held-out `batches`."""
    mesh = mesh or sharding_lib.data_mesh()
    replicated = sharding_lib.replicated(mesh)
    eval_step = jax.jit(
        make_sweep_eval_step(make_member_loss_fn(model)),
        in_shardings=(replicated, sharding_lib.batch_sharding(mesh), replicated),
        out_shardings=replicated,
    )
    grid = jax.device_put(grid_arrays(members), replicated)
    totals = np.zeros((3, len(members)))
    for batch in batches:
        batch = {k: v for k, v in batch.items() if k != "ids"}
        sums = jax.device_get(eval_step(params, sharding_lib.global_batch(batch, mesh), grid))
        totals += np.stack([sums["loss_sum"], sums["correct_sum"], sums["num_frames"]])
    frames = np.maximum(totals[2], 1.0)
    return [
        {
            "loss": float(totals[0, m] / frames[m]),
            "frame_accuracy": float(totals[1, m] / frames[m]),
            "num_frames": float(totals[2, m]),
        }
        for m in range(len(members))
    ]


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    with wd.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def run(config, workdir: pathlib.Path) -> dict:
    """Runner stage `sweep`: trains config.sweep.points together, decodes and plots them."""
    from tsasr.decode import results as results_lib

    cfg = config.student
    workdir = pathlib.Path(workdir)
    out = workdir / OUTPUT
    reader = sl.SoftLabelReader(workdir / "labels")
    members = parse_grid(config.sweep.points, stored_k=reader.k)
    wd.write_json(out / "grid.json", [dataclasses.asdict(m) | {"system": m.system} for m in members])

    records = [r for split in student.SPLITS for r in acoustic.read(workdir, split)]
    features = acoustic.compute_features(records, "sweep: noisy features")
    is_held = {r["id"]: trainer.heldout(r.get("clean_id", r["id"]), cfg.heldout_percent) for r in records}
    norm = acoustic.normalisation({r["id"]: features[r["id"]] for r in records if not is_held[r["id"]]})
    features = acoustic.normalise(features, norm)
    # Every member reads the same examples at the stored K; its k and T select targets in the step.
    examples = student.soft_examples([r for r in records if not is_held[r["id"]]], features, reader, reader.k, 1.0)
    held = student.soft_examples([r for r in records if is_held[r["id"]]], features, reader, reader.k, 1.0)

    model_fields = {**cfg.model.to_dict(), "num_senones": reader.num_senones}
    model = build_model(model_fields)
    wd.write_json(out / "model.json", model_fields)
    wd.write_json(out / "norm.json", norm)
    train_cfg = ml_collections.ConfigDict(cfg.train.to_dict())
    train_cfg.seed = int(config.seed)
    train_cfg.feature_dim = int(examples[0]["features"].shape[1])
    batching_cfg = dict(
        batch_size=cfg.batch_size, bucket_boundaries=tuple(cfg.bucket_boundaries), seed=int(config.seed)
    )
    batcher = batching.Batcher(
        examples, batching.BatchingConfig(**batching_cfg), jax.process_index(), jax.process_count()
    )
    started = time.perf_counter()
    state = train(train_cfg, model, batcher, members, out)
    train_seconds = time.perf_counter() - started

    heldout = (
        evaluate(
            model,
            state.params,
            batching.Batcher(held, batching.BatchingConfig(**batching_cfg, drop_remainder=False)).epoch(),
            members,
        )
        if held
        else []
    )
    reference = "teacher_seq" if (workdir / "decode" / "teacher_seq").exists() else "teacher_ce"
    results_path = workdir / "results.json"
    for m, member in enumerate(members):
        scored = json.loads(results_path.read_text()).get("systems", {}) if results_path.exists() else {}
        # A resumed stage (same key: stale decode directories were removed) skips members it scored.
        if member.system in scored and (workdir / "decode" / member.system).exists():
            continue
        acoustic.decode_conditions(
            workdir, member.system, model, member_params(state.params, m), norm, config, reference=reference
        )
        extra = {"top_k": member.top_k, "temperature": member.temperature}
        if heldout:
            extra.update(
                heldout_loss=round(heldout[m]["loss"], 4), heldout_frame_accuracy=round(heldout[m]["frame_accuracy"], 4)
            )
        results_lib.update_results(workdir, member.system, {}, extra)

    systems = json.loads(results_path.read_text())["systems"]
    wd.write_text(
        workdir / TABLE,
        f"# k x T sweep\n\nStudents trained together (one vmapped step), "
        f"{train_cfg.num_steps} steps each; relative to `{reference}` in results.md.\n\n"
        + sweep_table(systems, members),
    )
    plot_sweep(systems, members, workdir / "plots" / PLOT)
    wers = {m.system: systems.get(m.system, {}).get("wer", {}) for m in members}
    best = min(wers, key=lambda s: wers[s].get("noisy", float("inf")))
    return {
        "members": len(members),
        "steps": int(train_cfg.num_steps),
        "train_seconds": round(train_seconds, 1),
        "utterances": len(examples),
        "stored_k": reader.k,
        "best_noisy": best,
        "wer": wers,
        "table": TABLE,
        "plot": f"plots/{PLOT}",
    }


def with_grid(config: ml_collections.ConfigDict, points) -> ml_collections.ConfigDict:
    """The config with `sweep.points` set (so config.json and the sweep's stage key hold the grid).

    Raises ValueError on an invalid grid, one whose largest k exceeds student.label_top_k, or
    a student section the sweep cannot honour (online teacher, hard-label mixing), before
    any stage runs.
    """
    if config.student.online or config.student.hard_weight:
        raise ValueError(
            "a sweep trains every point from the stored soft labels alone: set student.online=False "
            f"and student.hard_weight=0 (got online={config.student.online}, hard_weight={config.student.hard_weight})"
        )
    stored_k = config.student.label_top_k or None  # 0 = every senone, known only after alignment
    members = parse_grid(list(points), stored_k=stored_k)
    config = config.copy_and_resolve_references()  # the caller's config keeps its own grid
    with config.unlocked():
        config.sweep = ml_collections.ConfigDict()
        config.sweep.points = [{"top_k": m.top_k, "temperature": m.temperature} for m in members]
    config.lock()
    return config


def stages(config: ml_collections.ConfigDict, until: str | None = None) -> tuple:
    """The runner's stages for a sweep: the recipe up to `label` (shared by every member),
    then the sweep, keyed by the student section, the grid and the labels it reads."""
    from tsasr import pipeline

    upstream = []
    for stage in pipeline.STAGES:
        upstream.append(stage)
        if stage.name in ("label", until):
            break
    members = parse_grid(config.sweep.points)
    sweep_stage = pipeline.Stage(
        STAGE,
        run,
        ("seed", "student", "decode", "sweep"),
        deps=("label", "noisify", "teacher_ce", "teacher_seq"),
        outputs=(OUTPUT, *(os.path.join("decode", m.system) for m in members)),
    )
    if upstream[-1].name != "label":
        return tuple(upstream)
    return tuple(upstream) + (sweep_stage,)
