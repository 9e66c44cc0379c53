"""The training loop: `train(config, model, batches_fn, workdir)`, read top to bottom.

Shapes, then shardings, then a jitted init; resume from the workdir; compile the step
once per batch shape (the first before the loop, reporting its cost); run; log; save.
The loop is the only place with Python-side state (step counter, timers, metrics).
"""

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import tqdm

from tsasr.data import batching
from tsasr.train import checkpoint as checkpoint_lib
from tsasr.train.config import train_config
from tsasr.train import metrics as metrics_lib
from tsasr.train import optim
from tsasr.train import sharding as sharding_lib
from tsasr.train import state as state_lib
from tsasr.train import step as step_lib

log = logging.getLogger(__name__)


default_config = train_config  # the training options: tsasr/train/config.py


def _batch_signature(batch: dict):
    return tuple((k, v.shape, str(v.dtype)) for k, v in sorted(batch.items()))


def _write_config(workdir: str, config, model) -> None:
    if jax.process_index() != 0:
        return
    record = {"train": config.to_dict(), "model": {"name": type(model).__name__, **dataclasses.asdict(model.config)}}
    path = os.path.join(workdir, "train_config.json")
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=2, default=str)
    os.replace(path + ".tmp", path)


def train(
    config,
    model,
    batches_fn: Callable[[int], Iterator[dict]],
    workdir: str,
    *,
    mesh=None,
    after_step: Callable[[int], None] | None = None,
    loss_fn: Callable | None = None,
    frozen=None,
):
    """Trains `model` and returns the final TrainState.

    Args:
      config: `default_config()`-like ConfigDict.
      model: a tsasr.models module (its `config.subsampling` sets target subsampling).
      batches_fn: start_step -> iterator of this host's batches (numpy dicts, see
        tsasr.data.batching) for global steps start_step, start_step + 1, ...; a resumed
        run asks for the batches from its checkpoint's step.
      workdir: checkpoints, metrics.jsonl, tensorboard/ and train_config.json go here.
      mesh: device mesh; default all devices on one data axis.
      after_step: called with the step number after each step is dispatched (tests use it
        to crash a run at a known point).
      loss_fn: `(params, batch, rng, train) -> (loss, (accuracy, num_frames))` replacing
        the default frame/soft-target CE (sequence training passes LF-MMI here).
      frozen: params the loss reads but does not train (an online teacher's), passed to
        every step as a replicated argument rather than baked into the compiled step.
    """
    os.makedirs(workdir, exist_ok=True)
    _write_config(workdir, config, model)
    mesh = mesh or sharding_lib.data_mesh()
    replicated = sharding_lib.replicated(mesh)
    tx, schedule = optim.make_optimizer(config.optimizer, config.num_steps)
    init_rng, step_rng = jax.random.split(jax.random.PRNGKey(config.seed))

    def init_fn():
        features = jnp.zeros((1, 12, config.feature_dim), jnp.float32)
        paddings = jnp.zeros((1, 12), jnp.float32)
        variables = model.init({"params": init_rng, "dropout": init_rng}, features, paddings)
        return state_lib.create(variables["params"], tx)

    abstract_state = jax.eval_shape(init_fn)
    checkpoints = checkpoint_lib.Checkpoints(
        os.path.join(workdir, "checkpoints"), config.checkpoint_every, config.max_checkpoints
    )
    state = checkpoints.restore_or_init(
        abstract_state, replicated, jax.jit(init_fn, out_shardings=replicated), config.init_checkpoint
    )
    start_step = int(jax.device_get(state.step))
    num_params = sum(x.size for x in jax.tree.leaves(abstract_state.params))
    log.info(
        "%s: %d parameters, starting at step %d of %d on %d devices.",
        type(model).__name__,
        num_params,
        start_step,
        config.num_steps,
        mesh.devices.size,
    )

    loss_fn = loss_fn or step_lib.make_loss_fn(
        model,
        model.config.subsampling,
        step_lib.compute_dtype(config.compute_dtype),
        config.soft_top_k,
        config.soft_temperature,
    )
    train_step = step_lib.jit_train_step(
        step_lib.make_train_step(loss_fn, tx, schedule), mesh, with_frozen=frozen is not None
    )
    frozen_args = () if frozen is None else (sharding_lib.replicate(frozen, mesh),)
    batches = batching.prefetch(batches_fn(start_step), lambda b: sharding_lib.global_batch(b, mesh), config.prefetch)

    compiled = {}  # Batch signature -> executable: each shape is traced exactly once.
    writer = metrics_lib.MetricsWriter(workdir, start_step)
    bar = tqdm.tqdm(
        total=config.num_steps,
        initial=start_step,
        unit="step",
        disable=not config.progress_bar or jax.process_index() != 0,
    )
    pending = []  # (step, ids, device measurements) not yet checked on the host.
    window = []  # Host measurements since the last metrics line.
    window_start = time.perf_counter()

    def check_pending():
        """NaN guard and metrics for dispatched steps; blocks on their results."""
        nonlocal window_start
        while pending:
            step, ids, measurements = pending.pop(0)
            measurements = jax.device_get(measurements)
            step_lib.check_finite(step, measurements, ids)
            window.append(measurements)
            if (step + 1) % config.log_every == 0 or step + 1 == config.num_steps:
                scalars = metrics_lib.window_summary(window, time.perf_counter() - window_start)
                writer.write(step + 1, scalars)
                bar.set_postfix(loss=f"{scalars['loss']:.3f}", frames_per_s=f"{scalars['frames_per_s']:.0f}")
                window.clear()
                window_start = time.perf_counter()

    try:
        for step in range(start_step, config.num_steps):
            batch, ids = next(batches)
            signature = _batch_signature(batch)
            if signature not in compiled:
                lowered = train_step.lower(state, batch, step_rng, *frozen_args)
                compiled[signature] = lowered.compile()
                cost = compiled[signature].cost_analysis() or {}
                log.info(
                    "compiled the step for %s: %.3g GFLOP per step.",
                    {k: v[1] for k, v in zip(sorted(batch), signature)},
                    float(cost.get("flops", float("nan"))) / 1e9,
                )
                window_start = time.perf_counter()  # Compilation is not training throughput.
            state, measurements = compiled[signature](state, batch, step_rng, *frozen_args)
            pending.append((step, ids, measurements))
            # Check the previous step while this one runs, so the host never stalls the
            # device; before a checkpoint, check everything so no NaN state is ever saved.
            if step + 1 < config.num_steps and (config.checkpoint_every <= 0 or (step + 1) % config.checkpoint_every):
                while len(pending) > 1:
                    last = pending.pop()
                    check_pending()
                    pending.append(last)
            else:
                check_pending()
            checkpoints.save(step + 1, state)
            bar.update(1)
            if after_step is not None:
                after_step(step)
        check_pending()
        checkpoints.save(config.num_steps, state, force=True)
    finally:
        batches.close()
        bar.close()
        writer.close()
        checkpoints.close()
    return state


def evaluate(config, model, params, batches, *, mesh=None, loss_fn: Callable | None = None, frozen=None) -> dict:
    """Frame-weighted loss and frame accuracy of `params` over finite `batches`.

    Args:
      config: the training config (compute dtype and soft-target options).
      model: the model being evaluated.
      params: its parameters (e.g. `train(...).params`).
      batches: this host's batches, e.g. `Batcher(dev, BatchingConfig(...,
        drop_remainder=False)).epoch()`, so every utterance counts once.
      mesh: device mesh; default all devices on one data axis.
      loss_fn, frozen: as for `train` (e.g. an online teacher and its params).

    Returns:
      {'loss', 'frame_accuracy', 'num_frames'} as Python floats.
    """
    mesh = mesh or sharding_lib.data_mesh()
    loss_fn = loss_fn or step_lib.make_loss_fn(
        model,
        model.config.subsampling,
        step_lib.compute_dtype(config.compute_dtype),
        config.soft_top_k,
        config.soft_temperature,
    )
    replicated = sharding_lib.replicated(mesh)
    frozen_args = () if frozen is None else (sharding_lib.replicate(frozen, mesh),)
    eval_step = jax.jit(
        step_lib.make_eval_step(loss_fn),
        in_shardings=(replicated, sharding_lib.batch_sharding(mesh)) + ((replicated,) if frozen_args else ()),
        out_shardings=replicated,
    )
    totals = {"loss_sum": 0.0, "correct_sum": 0.0, "num_frames": 0.0}
    for batch in batches:
        batch = {k: v for k, v in batch.items() if k != "ids"}
        sums = jax.device_get(eval_step(params, sharding_lib.global_batch(batch, mesh), *frozen_args))
        for key in totals:
            totals[key] += float(sums[key])
    if totals["num_frames"] == 0:
        raise ValueError("evaluate: the batches hold no real frames.")
    return {
        "loss": totals["loss_sum"] / totals["num_frames"],
        "frame_accuracy": totals["correct_sum"] / totals["num_frames"],
        "num_frames": totals["num_frames"],
    }
