"""The k x T sweep's students trained together (one vmapped step) vs one after another.

Prints ONE JSON object with `vmapped_vs_sequential`: the time to train the 12 grid students
(k in {5, 10, 20, 40} x T in {1, 2, 3}) for `--steps` steps one after another, each with
the ordinary single-student step (tsasr.train.step, its k and T static), divided by the time
of the same steps in the trainer's member-axis step (tsasr.train.loop.vmap_members, k and T
per-member arrays). Same model (the default student: tsasr.recipes.asr.config.ce_config, a 4-layer 256-wide
TDNN), same random batches and targets, same optimizer; compilation is excluded (every step
is compiled and run once before timing). The two are measured in alternating rounds, so a
machine whose load changes affects both; the figure is the median of the rounds' ratios.

  python bench/sweep.py [--rounds 2] [--steps 3] [--senones 800] [--dtype float32]
  python bench/sweep.py --rounds 5 --steps 30      # on a GPU: steps there take milliseconds

On 2 CPU cores the students share no FLOPs and the figure is about 1; the vmapped step
pays off on an accelerator, where one small student's step leaves the device mostly idle.

A benchmark, never a test: numbers depend on the machine and its load.
"""

import argparse
import json
import os
import platform
import time

import jax
import numpy as np

import jax.numpy as jnp

from tsasr.models import build_model
from tsasr.recipes.asr import grid as grid_lib
from tsasr.recipes.asr import objectives
from tsasr.recipes.asr.config import ce_config
from tsasr.train import loop, malloc, optim, sharding, state as state_lib, step as step_lib

GRID = [{"top_k": k, "temperature": t} for k in (5, 10, 20, 40) for t in (1.0, 2.0, 3.0)]
STORED_K, FEATURE_DIM = 40, 64


def random_batch(rng, batch_size: int, frames: int, senones: int) -> dict:
    """features [batch, frames, 64], soft_ids / soft_logits [batch, frames, 40] sorted, some padding."""
    paddings = np.zeros((batch_size, frames), np.float32)
    for row in range(batch_size):
        paddings[row, rng.integers(frames // 2, frames + 1) :] = 1.0
    ids = np.argsort(rng.random((batch_size, frames, senones)), axis=-1)[..., :STORED_K].astype(np.int32)
    logits = -np.sort(-rng.normal(scale=3.0, size=(batch_size, frames, STORED_K)), axis=-1).astype(np.float32)
    return {
        "features": rng.normal(size=(batch_size, frames, FEATURE_DIM)).astype(np.float32),
        "feature_paddings": paddings,
        "soft_ids": ids,
        "soft_logits": logits,
    }


def main() -> None:
    malloc.tune()  # as tsasr.run does, before JAX starts its threads
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="steps per student per round")
    parser.add_argument("--senones", type=int, default=800)
    parser.add_argument("--dtype", default="float32", choices=sorted(step_lib.COMPUTE_DTYPES))
    args = parser.parse_args()
    dtype = step_lib.compute_dtype(args.dtype)

    cfg = ce_config()
    model = build_model({**cfg.model.to_dict(), "num_senones": args.senones})
    members = grid_lib.parse_grid(GRID, stored_k=STORED_K)
    tx, schedule = optim.make_optimizer(cfg.train.optimizer, 1000)
    mesh = sharding.data_mesh()
    replicated = sharding.replicated(mesh)
    batch_size, frames = cfg.batch_size, cfg.bucket_boundaries[0]
    rng = np.random.default_rng(0)
    batches = [
        sharding.global_batch(random_batch(rng, batch_size, frames, args.senones), mesh) for _ in range(args.steps)
    ]
    init_rng, step_rng = jax.random.split(jax.random.PRNGKey(0))
    grid = jax.device_put(grid_lib.grid_arrays(members), replicated)

    def init_one(key):
        variables = model.init({"params": key, "dropout": key}, jnp.zeros((1, 12, FEATURE_DIM)), jnp.zeros((1, 12)))
        return state_lib.create(variables["params"], tx)

    member_step = loop.vmap_members(step_lib.make_train_step(objectives.make_loss_fn(model, 1, dtype), tx, schedule))
    vmapped = jax.jit(
        member_step,
        donate_argnums=(0,),
        in_shardings=(replicated, sharding.batch_sharding(mesh), replicated, replicated),
        out_shardings=(replicated, replicated),
    )
    stacked = jax.jit(lambda: jax.vmap(init_one)(loop.member_keys(init_rng, len(members))), out_shardings=replicated)()
    singles = [
        step_lib.jit_train_step(
            step_lib.make_train_step(objectives.make_loss_fn(model, 1, dtype, m.top_k, m.temperature), tx, schedule),
            mesh,
        )
        for m in members
    ]
    students = [jax.device_put(loop.member_slice(stacked, m), replicated) for m in range(len(members))]
    keys = [jax.random.fold_in(step_rng, m) for m in range(len(members))]

    def run_vmapped():
        nonlocal stacked
        for batch in batches:
            stacked, measurements = vmapped(stacked, batch, grid, step_rng)
        jax.block_until_ready((stacked, measurements))

    def run_sequential():
        for m, single in enumerate(singles):  # student after student, each over the same batches
            for batch in batches:
                students[m], measurements = single(students[m], batch, keys[m])
            jax.block_until_ready((students[m], measurements))

    started = time.perf_counter()
    run_vmapped(), run_sequential()  # compile every step and warm up
    compile_seconds = time.perf_counter() - started
    rounds = []
    for _ in range(args.rounds):
        timings = {}
        for name, fn in (("sequential", run_sequential), ("vmapped", run_vmapped)):
            t0 = time.perf_counter()
            fn()
            timings[name] = time.perf_counter() - t0
        rounds.append(
            {
                **{f"{k}_s": round(v, 3) for k, v in timings.items()},
                "ratio": round(timings["sequential"] / timings["vmapped"], 3),
            }
        )
    ratio = float(np.median([r["ratio"] for r in rounds]))
    student_frames = (
        len(members)
        * args.steps
        * float(sum(np.sum(1 - np.asarray(b["feature_paddings"])) for b in batches))
        / args.steps
    )
    best_vmapped = min(r["vmapped_s"] for r in rounds)
    print(
        json.dumps(
            {
                "vmapped_vs_sequential": round(ratio, 3),
                "target": 2.0,
                "rounds": rounds,
                "students": len(members),
                "steps_per_student": args.steps,
                "vmapped_student_frames_per_s": round(student_frames / best_vmapped, 1),
                "compile_and_warmup_s": round(compile_seconds, 1),
                "dtype": args.dtype,
                "model": {**cfg.model.to_dict(), "num_senones": args.senones},
                "batch": {"utterances": batch_size, "frames": frames, "stored_k": STORED_K},
                "device": str(jax.devices()[0].device_kind),
                "backend": jax.default_backend(),
                "cpu_count": os.cpu_count(),
                "load_average": os.getloadavg(),
                "machine": platform.machine(),
            },
            default=str,
        )
    )


if __name__ == "__main__":
    main()
