"""The training loop: `train(config, model, loss_fn, batches_fn, workdir)`, read top to bottom.

Shapes, then shardings, then a jitted init; resume from the workdir; compile the step
once per batch shape (the first before the loop, reporting its cost); run; log; save.
The loop is the only place with Python-side state (step counter, timers, metrics). It knows
no task: the loss (tsasr.train.step's contract) and the batches come from the caller.

With `members`, one loop trains several models of the same architecture at once (a sweep):
their states are stacked along a leading member axis and one jitted step, a `jax.vmap` of
the ordinary step, updates all of them on each batch, which is read and transferred once.
"""

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from tsasr import workdir as wd
from tsasr.data import batching
from tsasr.train import checkpoint as checkpoint_lib
from tsasr.train.config import train_config
from tsasr.train import metrics as metrics_lib
from tsasr.train import optim
from tsasr.train import preemption
from tsasr.train import sharding as sharding_lib
from tsasr.train import state as state_lib
from tsasr.train import step as step_lib

log = logging.getLogger(__name__)


default_config = train_config  # the training options: tsasr/train/config.py


@dataclasses.dataclass(frozen=True)
class Members:
    """Models trained together along a member axis: their names (metrics go to
    WORKDIR/members/<name>/) and their per-member step inputs ({key: [members]} arrays that
    reach member m's loss as batch[key] = inputs[key][m], e.g. a soft-target k and T)."""

    names: tuple[str, ...]
    inputs: dict

    def __post_init__(self):
        for key, value in self.inputs.items():
            if np.shape(value)[:1] != (len(self.names),):
                raise ValueError(f"member input {key!r} has shape {np.shape(value)}, not [{len(self.names)}]")


def member_keys(rng, count: int):
    """Member m's key: fold_in(rng, m)."""
    return jax.vmap(lambda m: jax.random.fold_in(rng, m))(jnp.arange(count))


def member_slice(stacked, index: int):
    """Member `index`'s slice of a stacked tree (its params, or its whole TrainState)."""
    return jax.tree.map(lambda x: x[index], stacked)


def vmap_members(step: Callable) -> Callable:
    """step(state, batch, rng, *rest) -> (state, measurements) over stacked states: member m runs
    `step` on its slice with the batch plus its inputs and the key fold_in(rng, m), so it equals
    that step applied to member m alone."""

    def member_step(state, batch, inputs, rng, *rest):
        keys = member_keys(rng, jax.tree.leaves(inputs)[0].shape[0])

        def one(member_state, member_inputs, key):
            return step(member_state, {**batch, **member_inputs}, key, *rest)

        return jax.vmap(one)(state, inputs, keys)

    return member_step


def resolve_num_steps(config, batches_per_epoch: int, name: str = "") -> int:
    """The step count of a run: config.num_epochs passes over `batches_per_epoch` batches when
    num_epochs > 0 (logged), else config.num_steps."""
    if config.num_epochs > 0:
        steps = max(1, round(config.num_epochs * batches_per_epoch))
        log.info(
            "%s%g epochs of %d batches: %d steps",
            f"{name}: " if name else "",
            config.num_epochs,
            batches_per_epoch,
            steps,
        )
        return steps
    return int(config.num_steps)


BEST = "best"  # WORKDIR/best: the checkpoint with the lowest dev loss; WORKDIR/best.json says which


def best_checkpoint(workdir: str) -> str:
    """The checkpoint directory to use a trained model from: the best on dev when the run
    evaluated a dev set, else the latest."""
    best = os.path.join(workdir, BEST)
    return best if wd.exists(os.path.join(workdir, "best.json")) else os.path.join(workdir, "checkpoints")


def _batch_signature(batch: dict):
    return tuple((k, v.shape, str(v.dtype)) for k, v in sorted(batch.items()))


def _write_config(workdir: str, config, model) -> None:
    if jax.process_index() != 0:
        return
    fields = getattr(model, "config", None)
    fields = dataclasses.asdict(fields) if dataclasses.is_dataclass(fields) else {}
    record = {"train": config.to_dict(), "model": {"name": type(model).__name__, **fields}}
    # default=str: a model field may be a dtype or another object JSON cannot hold
    wd.write_text(os.path.join(workdir, "train_config.json"), json.dumps(record, indent=2, default=str) + "\n")


def train(
    config,
    model,
    loss_fn: Callable,
    batches_fn: Callable[[int], Iterator[dict]],
    workdir: str,
    *,
    mesh=None,
    after_step: Callable[[int], None] | None = None,
    frozen=None,
    members: Members | None = None,
    dev_batches: Callable[[], Iterator[dict]] | None = None,
):
    """Trains `model` and returns the final TrainState (stacked over members, with `members`).

    Args:
      config: `default_config()`-like ConfigDict.
      model: a Flax module called as model.apply(variables, features [batch, frames, dim],
        paddings [batch, frames], train=..., rngs=...); initialised on config.feature_dim.
      loss_fn: `(params, batch, rng, train[, frozen]) -> (loss, metrics, weight)`
        (tsasr.train.step.make_train_step).
      batches_fn: start_step -> iterator of this host's batches (numpy dicts, see
        tsasr.data.batching) for global steps start_step, start_step + 1, ...; a resumed
        run asks for the batches from its checkpoint's step.
      workdir: checkpoints, metrics.jsonl, tensorboard/ and train_config.json go here.
      mesh: device mesh; default all devices on one data axis.
      after_step: called with the step number after each step is dispatched (tests use it
        to crash a run at a known point).
      frozen: params the loss reads but does not train (an online teacher's), passed to
        every step as a replicated argument rather than baked into the compiled step.
      members: train several models at once along a member axis (see `Members`); member m
        is initialised from fold_in(init_key, m) and its step key is fold_in(step_key, m).
      dev_batches: () -> one pass over this host's dev batches. With config.eval_every > 0 the
        dev loss and metrics are logged every eval_every steps and at the end (`dev_` keys in
        metrics.jsonl), the state with the lowest dev loss is kept in WORKDIR/best (best.json
        names its step; `best_checkpoint` picks it), and a dev metric that worsens while the
        training loss falls is warned about once.

    A SIGTERM during training (a preemption notice, tsasr.train.preemption) saves a checkpoint
    at the next step boundary and raises `preemption.Preempted`; a rerun resumes from it.
    """
    if wd.is_uri(workdir):
        # Checkpoints could go there (orbax writes URIs); metrics.jsonl, appended to, and
        # TensorBoard cannot yet (tsasr/train/metrics.py writes local files).
        raise ValueError(f"loop.train: workdir {workdir}: metrics are written to local files; {wd.LOCAL_ONLY}")
    os.makedirs(workdir, exist_ok=True)
    _write_config(workdir, config, model)
    mesh = mesh or sharding_lib.data_mesh()
    replicated = sharding_lib.replicated(mesh)
    tx, schedule = optim.make_optimizer(config.optimizer, config.num_steps)
    init_rng, step_rng = jax.random.split(jax.random.PRNGKey(config.seed))

    def init_one(rng):
        features = jnp.zeros((1, 12, config.feature_dim), jnp.float32)
        paddings = jnp.zeros((1, 12), jnp.float32)
        variables = model.init({"params": rng, "dropout": rng}, features, paddings)
        return state_lib.create(variables["params"], tx)

    if members is None:
        init_fn = lambda: init_one(init_rng)  # noqa: E731
    else:
        init_fn = lambda: jax.vmap(init_one)(member_keys(init_rng, len(members.names)))  # noqa: E731
    abstract_state = jax.eval_shape(init_fn)
    checkpoints = checkpoint_lib.Checkpoints(
        os.path.join(workdir, "checkpoints"), config.checkpoint_every, config.max_checkpoints
    )
    state = checkpoints.restore_or_init(
        abstract_state, replicated, jax.jit(init_fn, out_shardings=replicated), config.init_checkpoint
    )
    start_step = int(np.ravel(jax.device_get(state.step))[0])
    num_params = sum(x.size for x in jax.tree.leaves(abstract_state.params))
    log.info(
        "%s: %d parameters%s, starting at step %d of %d on %d devices.",
        type(model).__name__,
        num_params // (len(members.names) if members else 1),
        f" x {len(members.names)} members" if members else "",
        start_step,
        config.num_steps,
        mesh.devices.size,
    )

    step = step_lib.make_train_step(loss_fn, tx, schedule)
    extra_args = () if frozen is None else (sharding_lib.replicate(frozen, mesh),)
    if members is None:
        train_step = step_lib.jit_train_step(step, mesh, with_frozen=frozen is not None)
    else:
        train_step = jax.jit(
            vmap_members(step),
            donate_argnums=(0,),
            in_shardings=(replicated, sharding_lib.batch_sharding(mesh), replicated, replicated)
            + ((replicated,) if extra_args else ()),
            out_shardings=(replicated, replicated),
        )
        member_inputs = jax.device_put({k: np.asarray(v) for k, v in members.inputs.items()}, replicated)
    batches = batching.prefetch(batches_fn(start_step), lambda b: sharding_lib.global_batch(b, mesh), config.prefetch)

    def call_args(batch):
        if members is None:
            return (state, batch, step_rng, *extra_args)
        return (state, batch, member_inputs, step_rng, *extra_args)

    compiled = {}  # Batch signature -> executable: each shape is traced exactly once.
    if members is None:
        writers = [metrics_lib.MetricsWriter(workdir, start_step)]
    else:
        writers = [metrics_lib.MetricsWriter(os.path.join(workdir, "members", n), start_step) for n in members.names]
    bar = tqdm.tqdm(
        total=config.num_steps,
        initial=start_step,
        unit="step",
        # None: tqdm's own rule, no bar when stderr is not a terminal (a redirected or SLURM log
        # gets the metrics lines, not thousands of carriage-return updates).
        disable=None if config.progress_bar and jax.process_index() == 0 else True,
    )
    pending = []  # (step, ids, device measurements) not yet checked on the host.
    window = []  # Host measurements since the last metrics line.
    window_start = time.perf_counter()
    dev = None
    if config.eval_every > 0 and dev_batches is not None:
        if members is not None:
            raise ValueError("dev evaluation with a best checkpoint is for one model, not a member axis")
        dev = _DevTracker(workdir, config, make_evaluator(loss_fn, mesh=mesh, frozen=frozen), writers[0])
    last_loss = [float("nan")]  # the training loss of the last metrics line, for the over-fitting warning

    def check_pending():
        """NaN guard and metrics for dispatched steps; blocks on their results."""
        nonlocal window_start
        while pending:
            step, ids, measurements = pending.pop(0)
            measurements = jax.device_get(measurements)
            if members is None:
                step_lib.check_finite(step, measurements, ids)
            else:
                for m, name in enumerate(members.names):
                    try:
                        step_lib.check_finite(step, {k: v[m] for k, v in measurements.items()}, ids)
                    except FloatingPointError as err:
                        raise FloatingPointError(f"member {name}: {err}") from None
            window.append(measurements)
            if (step + 1) % config.log_every == 0 or step + 1 == config.num_steps:
                elapsed = time.perf_counter() - window_start
                for m, writer in enumerate(writers):
                    scalars = metrics_lib.window_summary(
                        window, elapsed, member=None if members is None else m, unit=config.weight_unit
                    )
                    writer.write(step + 1, scalars)
                rate = f"{config.weight_unit}_per_s"
                bar.set_postfix({"loss": f"{scalars['loss']:.3f}", rate: f"{scalars[rate]:.0f}"})
                last_loss[0] = float(scalars["loss"])
                window.clear()
                window_start = time.perf_counter()

    if dev is not None and start_step == 0 and config.get("init_checkpoint"):
        # Fine-tuning: the initial state is a candidate too, so the model is never worse on dev
        # than the one it started from.
        dev.evaluate(0, state, dev_batches(), last_loss[0])
    notice = preemption.Notice()
    try:
        notice.start()  # SIGTERM: a checkpoint at the next step boundary, then Preempted
        for step in range(start_step, config.num_steps):
            batch, ids = next(batches)
            signature = _batch_signature(batch)
            if signature not in compiled:
                compiled[signature] = train_step.lower(*call_args(batch)).compile()
                cost = compiled[signature].cost_analysis() or {}
                log.info(
                    "compiled the step for %s: %.3g GFLOP per step.",
                    {k: v[1] for k, v in zip(sorted(batch), signature)},
                    float(cost.get("flops", float("nan"))) / 1e9,
                )
                window_start = time.perf_counter()  # Compilation is not training throughput.
            state, measurements = compiled[signature](*call_args(batch))
            pending.append((step, ids, measurements))
            # Check the previous step while this one runs, so the host never stalls the
            # device; before a checkpoint or a dev evaluation, check everything so no NaN
            # state is ever saved.
            evaluates = dev is not None and ((step + 1) % config.eval_every == 0 or step + 1 == config.num_steps)
            if (
                step + 1 < config.num_steps
                and not evaluates
                and (config.checkpoint_every <= 0 or (step + 1) % config.checkpoint_every)
            ):
                while len(pending) > 1:
                    last = pending.pop()
                    check_pending()
                    pending.append(last)
            else:
                check_pending()
            if evaluates:
                dev.evaluate(step + 1, state, dev_batches(), last_loss[0])
            checkpoints.save(step + 1, state)
            bar.update(1)
            if after_step is not None:
                after_step(step)
            if step + 1 < config.num_steps and notice.reached(step + 1):
                check_pending()  # no NaN state is saved, and metrics.jsonl holds every step saved
                checkpoints.save(step + 1, state, force=True)
                raise preemption.Preempted(step + 1)  # `finally` waits for the save to be written
        check_pending()
        checkpoints.save(config.num_steps, state, force=True)
        if notice.received:  # at the last step: trained, but the process is still asked to stop
            raise preemption.Preempted(config.num_steps)
    finally:
        notice.stop()
        batches.close()
        bar.close()
        for writer in writers:
            writer.close()
        checkpoints.close()
        if dev is not None:
            dev.close()
    return state


class _DevTracker:
    """Dev evaluations during training: metrics lines, the best state on dev, and the warning
    when a dev metric worsens while the training loss falls. Resumes from WORKDIR/best.json."""

    def __init__(self, workdir: str, config, evaluator, writer):
        self.workdir, self.evaluator, self.writer = workdir, evaluator, writer
        self.path = os.path.join(workdir, "best.json")
        self.best = wd.read_json(self.path) if wd.exists(self.path) else None
        self.saver = checkpoint_lib.Checkpoints(os.path.join(workdir, BEST), 0, max_to_keep=1)
        self.previous = None  # (train loss, dev results) of the last evaluation
        self.warned = False

    def evaluate(self, step: int, state, batches, train_loss: float) -> None:
        results = self.evaluator(state.params, batches)
        scalars = {f"dev_{k}": v for k, v in results.items() if k != "weight"}
        self.writer.write(step, scalars)
        if self.best is None or results["loss"] < self.best["dev_loss"]:
            self.saver.save(step, state, force=True)
            self.saver.manager.wait_until_finished()  # best.json never names an unwritten state
            self.best = {"step": step, **scalars}
            if jax.process_index() == 0:
                wd.write_json(self.path, self.best)
        if self.previous and not self.warned:
            before_loss, before = self.previous
            worse = [k for k in results if k != "weight" and _worse(k, before[k], results[k])]
            if worse and train_loss < before_loss:
                log.warning(
                    "%s: at step %d the dev %s worsened (%s) while the training loss fell (%.4f -> %.4f); "
                    "over-fitting? The best state on dev (step %d) is kept in %s",
                    os.path.basename(self.workdir),
                    step,
                    ", ".join(worse),
                    ", ".join(f"{before[k]:.4f} -> {results[k]:.4f}" for k in worse),
                    before_loss,
                    train_loss,
                    self.best["step"],
                    os.path.join(self.workdir, BEST),
                )
                self.warned = True
        self.previous = (train_loss, results)

    def close(self) -> None:
        self.saver.close()


def _worse(name: str, before: float, after: float) -> bool:
    """A loss that rose, or an accuracy (any other metric) that fell."""
    return after > before if "loss" in name else after < before


def make_evaluator(loss_fn: Callable, *, mesh=None, frozen=None, members: Members | None = None):
    """evaluator(params, batches) -> weighted means {'loss', <metric>..., 'weight'} (one dict per
    member with `members`) over finite `batches`; the eval step is compiled once per batch shape
    and reused across calls (dev evaluations during training)."""
    mesh = mesh or sharding_lib.data_mesh()
    replicated = sharding_lib.replicated(mesh)
    eval_step = step_lib.make_eval_step(loss_fn)
    extra_args = () if frozen is None else (sharding_lib.replicate(frozen, mesh),)
    if members is not None:
        per_member = eval_step
        eval_step = lambda p, batch, inputs, *rest: jax.vmap(  # noqa: E731
            lambda mp, mi: per_member(mp, {**batch, **mi}, *rest)
        )(p, inputs)
        extra_args = (jax.device_put({k: np.asarray(v) for k, v in members.inputs.items()}, replicated),) + extra_args
    eval_step = jax.jit(
        eval_step,
        in_shardings=(replicated, sharding_lib.batch_sharding(mesh)) + (replicated,) * len(extra_args),
        out_shardings=replicated,
    )

    def evaluator(params, batches):
        totals = None
        for batch in batches:
            batch = {k: v for k, v in batch.items() if k != "ids"}
            sums = jax.device_get(eval_step(params, sharding_lib.global_batch(batch, mesh), *extra_args))
            sums = {k: np.asarray(v, np.float64) for k, v in sums.items()}
            totals = sums if totals is None else {k: totals[k] + sums[k] for k in totals}
        if totals is None or np.any(totals["weight"] == 0):
            raise ValueError("evaluate: the batches hold no real examples.")

        def means(m=None):
            pick = (lambda v: float(v)) if m is None else (lambda v: float(v[m]))
            weight = pick(totals["weight"])
            return {**{k: pick(v) / weight for k, v in totals.items() if k != "weight"}, "weight": weight}

        return means() if members is None else [means(m) for m in range(len(members.names))]

    return evaluator


def evaluate(model, params, loss_fn: Callable, batches, *, mesh=None, frozen=None, members: Members | None = None):
    """Weighted means of the loss and its metrics of `params` over finite `batches`.

    Args:
      model: the model being evaluated (unused by the step itself; kept for symmetry with train).
      params: its parameters (e.g. `train(...).params`; stacked with `members`).
      loss_fn: the loss contract of `train`.
      batches: this host's batches, e.g. `Batcher(dev, BatchingConfig(...,
        drop_remainder=False)).epoch()`, so every example counts once.
      mesh: device mesh; default all devices on one data axis.
      frozen: as for `train` (e.g. an online teacher's params).
      members: as for `train`; then one result per member.

    Returns:
      {'loss', <metric>..., 'weight'} as Python floats (a list of them, one per member).
    """
    del model
    return make_evaluator(loss_fn, mesh=mesh, frozen=frozen, members=members)(params, batches)
