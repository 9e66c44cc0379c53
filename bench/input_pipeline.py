"""Benchmark of the streaming input pipeline: padded 10 ms frames handed to the step per second
of one host core.

Writes a built-in-corpus-like split with tsasr.data.records in a temporary directory
(utterance durations log-normal around 2.5 s, 0.8-8 s, as the voice-assistant sentences of the
built-in corpus; int16 audio; the student's targets: a top-20 senone id and float16 logit per
frame beside a senone alignment), then reads batches through tsasr.data.loader (Grain, threads in
this process, no worker processes) the asr recipe's way (batch 16, buckets 256 / 512 frames).
`loader_frames_per_s_per_core` is the frames of the padded batches (batch x bucket length, what
the step computes LFBE of) per CPU second of this process (every thread counted), after a
warm-up; the files are in the page cache, so this is the CPU cost of reading, decoding and
padding, not of a disk. The issue's target is >= 200,000.

`onthefly_noisify_overhead`: the student's training step (the main job's model, batch 16, the
online teacher inside, as experiments/onthefly_top20_T2.py trains) with on-device mixing
(student.noisify='onthefly': FFT convolution with 1 + 3 RIRs, the mix, LFBE of the mix and of
the clean audio, tsasr.audio.device_mix) divided by the same step on precomputed noisy and clean
features of the same batch shapes; the median of --timed-steps steps after compiling, per
bucket (256 and 512 frames), weighted by the share of batches each bucket gets for these
utterance lengths. The issue's target is <= 1.15 on the 2-core CPU. `onthefly_noisify_overhead_cpu`
is the same ratio of this process's CPU seconds, which other jobs' load disturbs less.
`onthefly_mixing_overhead_vs_audio` divides by the step on the stored noisy copy and the clean
audio as 16-bit PCM with their LFBE in the step (the streamed input's design): what the mixing
adds when the features are on the device either way. Like `python -m tsasr.run`, it first sets
glibc's malloc to reuse freed memory (tsasr.train.malloc; `malloc_tuned`): without it every step
faults in its buffers anew (all three steps about 10 % slower on 2 cores, the ratios within
0.015). Prints one JSON object.

    python bench/input_pipeline.py [--hours 0.25] [--batches 300] [--timed-steps 7] [--only loader|onthefly]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import soundfile

from tsasr.data import loader as loader_lib
from tsasr.data import records
from tsasr.train import malloc

TOP_K = 20


def examples(hours: float, seed: int = 0):
    """Utterances of built-in-corpus-like lengths with student targets, one at a time."""
    rng = np.random.default_rng(seed)
    total, i = 0.0, 0
    while total < hours * 3600:
        seconds = float(np.clip(rng.lognormal(np.log(2.5), 0.45), 0.8, 8.0))
        samples = int(seconds * 16000)
        frames = 1 + (samples - 400) // 160
        yield {
            "id": f"utt{i:07d}",
            "audio": rng.integers(-8000, 8000, samples).astype(np.int16),
            "senones": rng.integers(0, 2000, frames).astype(np.int32),
            "soft_ids": rng.integers(0, 2000, (frames, TOP_K)).astype(np.int32),
            "soft_logits": rng.normal(size=(frames, TOP_K)).astype(np.float16),
        }
        total += seconds
        i += 1


def _noise_files(directory: str) -> list[dict]:
    """Four 20 s noise clips (tones in white noise) as a noise manifest's entries."""
    rng = np.random.default_rng(1)
    noises = []
    for i, kind in enumerate(("music", "tv", "stationary", "music")):
        t = np.arange(20 * 16000) / 16000
        audio = 0.2 * np.sin(2 * np.pi * (200 + 100 * i) * t) + 0.05 * rng.standard_normal(t.size)
        path = os.path.join(directory, f"noise{i}.wav")
        soundfile.write(path, audio.astype(np.float32), 16000, "PCM_16")
        noises.append({"id": f"noise{i}", "audio": path, "duration": 20.0, "kind": kind})
    return noises


def onthefly_overhead(directory: str, hours: float, batch_size: int, timed_steps: int) -> dict:
    """Student step time with on-device mixing / without (see the module docstring)."""
    import jax
    import jax.numpy as jnp
    import optax

    from tsasr.audio import device_features, device_mix
    from tsasr.audio import lfbe as lfbe_lib
    from tsasr.data import batching
    from tsasr.distill import label as label_lib
    from tsasr.models import build_model
    from tsasr.recipes.asr import config as asr_config
    from tsasr.recipes.asr import objectives
    from tsasr.recipes.asr import onthefly
    from tsasr.train import sharding
    from tsasr.train import state as state_lib
    from tsasr.train import step as step_lib

    config = asr_config.base_config()
    cfg = config.student
    fields = {**cfg.model.to_dict(), "num_senones": config.hmm.num_senones}
    model = build_model(fields)
    key = jax.random.PRNGKey(0)
    init = lambda k: model.init({"params": k, "dropout": k}, jnp.zeros((1, 12, 64)), jnp.zeros((1, 12)))["params"]  # noqa: E731
    teacher_params, student_params = init(key), init(jax.random.PRNGKey(1))
    mesh = sharding.data_mesh()
    frozen = sharding.replicate(teacher_params, mesh)
    tx = optax.adam(1e-3)
    loss_fn = objectives.make_loss_fn(
        model, 1, jnp.float32, cfg.top_k, cfg.temperature, teacher=label_lib.teacher_top_k(model, cfg.top_k)
    )
    rng = np.random.default_rng(0)
    norm = {"mean": rng.normal(size=64).tolist(), "std": (1 + rng.random(64)).tolist(), "utterance_mean": True}

    def on_stored_audio(batch_loss):
        """The stored copy streamed as 16-bit audio: LFBE of the noisy and the clean audio in the step."""

        def loss(params, batch, rng, train=True, **frozen):
            noisy, paddings = device_features.from_norm(batch["noisy_audio"], batch["audio_lengths"], norm)
            clean, _ = device_features.from_norm(batch["audio"], batch["audio_lengths"], norm)
            features = {"features": noisy, "clean_features": clean, "feature_paddings": paddings}
            return batch_loss(params, features, rng, train, **frozen)

        return loss

    steps = {
        "onthefly": device_mix.on_mix(loss_fn, norm, norm),
        "stored": loss_fn,
        "stored_audio": on_stored_audio(loss_fn),
    }
    steps = {
        name: step_lib.jit_train_step(step_lib.make_train_step(fn, tx, lambda s: 1e-3), mesh, with_frozen=True)
        for name, fn in steps.items()
    }
    draws = onthefly.MixDraws(_noise_files(directory), config.noisify.to_dict(), seed=0)
    frames = np.array([lfbe_lib.num_frames(len(e["audio"])) for e in examples(hours)])
    buckets = np.array([batching.bucket_length(int(f), tuple(cfg.bucket_boundaries)) for f in frames])
    result = {}
    for length in cfg.bucket_boundaries:
        lengths = [f for f, b in zip(frames, buckets) if b == length][:batch_size]
        audio = {
            f"u{i}": rng.integers(-3000, 3000, (f - 1) * 160 + 400).astype(np.int16) for i, f in enumerate(lengths)
        }
        records_ = [{"id": u} for u in audio]
        source = onthefly.OnTheFlyBatches(
            onthefly.onthefly_examples(records_, audio),
            audio,
            {u: "train_unlabelled" for u in audio},
            draws,
            batching.BatchingConfig(batch_size, tuple(cfg.bucket_boundaries), keys=onthefly.ONTHEFLY_KEYS),
        )
        mixed = next(source.epoch(0))
        mixed.pop("ids")
        features, paddings = jax.jit(lambda b: device_mix.features_of_mix(b, norm, norm))(
            {k: mixed[k] for k in device_mix.BATCH_KEYS}
        )
        noisy = jax.jit(device_mix.reverberant_mix)(*(mixed[k] for k in device_mix.BATCH_KEYS))
        batches = {
            "onthefly": mixed,
            "stored": {**jax.tree.map(np.asarray, features), "feature_paddings": np.asarray(paddings)},
            "stored_audio": {
                "audio": mixed["audio"],
                "noisy_audio": records.to_pcm16(np.asarray(noisy)),
                "audio_lengths": mixed["audio_lengths"],
            },
        }
        states = {n: state_lib.create(jax.tree.map(jnp.array, student_params), tx) for n in steps}
        compiled = {n: steps[n].lower(states[n], batches[n], key, frozen).compile() for n in steps}
        times = {n: [] for n in steps}
        cpu = {n: [] for n in steps}
        for i in range(timed_steps + 2):
            for n in steps:  # interleaved, so a change of load hits both
                start, cpu_start = time.perf_counter(), time.process_time()
                states[n], measurements = compiled[n](states[n], batches[n], key, frozen)
                jax.block_until_ready(measurements)
                if i >= 2:
                    times[n].append(time.perf_counter() - start)
                    cpu[n].append(time.process_time() - cpu_start)
        result[length] = {n: float(np.median(t)) for n, t in times.items()}
        result[length].update({f"{n}_cpu": float(np.median(t)) for n, t in cpu.items()})
    share = {length: float(np.mean(buckets == length)) for length in cfg.bucket_boundaries}
    total = sum(share.values())
    variants = ("onthefly", "stored", "stored_audio", "onthefly_cpu", "stored_cpu")
    weighted = {n: sum(share[b] / total * result[b][n] for b in result) for n in variants}
    return {
        "onthefly_noisify_overhead": round(weighted["onthefly"] / weighted["stored"], 3),
        # the same ratio of CPU seconds (every thread of this process): less sensitive to other jobs' load
        "onthefly_noisify_overhead_cpu": round(weighted["onthefly_cpu"] / weighted["stored_cpu"], 3),
        # against the stored copy as 16-bit audio with LFBE in the step (streamed input, item 1's
        # design): what the mixing itself adds, the features being on the device in both
        "onthefly_mixing_overhead_vs_audio": round(weighted["onthefly"] / weighted["stored_audio"], 3),
        "onthefly_step_ms": {str(b): round(1000 * r["onthefly"], 1) for b, r in result.items()},
        "stored_audio_step_ms": {str(b): round(1000 * r["stored_audio"], 1) for b, r in result.items()},
        "stored_step_ms": {str(b): round(1000 * r["stored"], 1) for b, r in result.items()},
        "onthefly_bucket_share": {str(b): round(s / total, 3) for b, s in share.items()},
        "onthefly_rir_taps": draws.taps,
    }


def main() -> None:
    tuned = malloc.tune()  # as tsasr.run does, before JAX starts its threads
    parser = argparse.ArgumentParser()
    parser.add_argument("--hours", type=float, default=0.25, help="audio in the temporary records")
    parser.add_argument("--batches", type=int, default=300, help="timed batches (after 20 of warm-up)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--read-threads", type=int, default=1)
    parser.add_argument("--timed-steps", type=int, default=7, help="timed student steps per bucket and variant")
    parser.add_argument("--only", choices=("loader", "onthefly"), help="run one of the two benchmarks")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.only == "onthefly":  # the student steps alone: no records, no loader keys
            overhead = onthefly_overhead(tmp, args.hours, args.batch_size, args.timed_steps)
            load = round(os.getloadavg()[0], 2)
            print(
                json.dumps({"cpu_count": os.cpu_count(), **overhead, "malloc_tuned": tuned, "load_average_1min": load})
            )
            return
        start = time.perf_counter()
        index = records.write_split(tmp, examples(args.hours), num_shards=4)
        write_seconds = time.perf_counter() - start
        config = loader_lib.LoaderConfig(
            batch_size=args.batch_size, bucket_boundaries=(256, 512), read_threads=args.read_threads, prefetch=4
        )
        loader = loader_lib.Loader(tmp, config)
        batches = loader(0)
        for _ in range(20):
            next(batches)
        frames = real = 0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(args.batches):
            batch = next(batches)
            frames += batch["feature_paddings"].size
            real += int((batch["feature_paddings"] == 0).sum())
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        batches.close()
        size = sum(os.path.getsize(os.path.join(tmp, s["file"])) for s in index["shards"])
        overhead = {} if args.only else onthefly_overhead(tmp, args.hours, args.batch_size, args.timed_steps)
    print(
        json.dumps(
            {
                "loader_frames_per_s_per_core": round(frames / cpu),
                "loader_frames_per_s_wall": round(frames / wall),
                "real_frame_share": round(real / frames, 3),
                "cpu_seconds": round(cpu, 3),
                "wall_seconds": round(wall, 3),
                "batches": args.batches,
                "batch_size": args.batch_size,
                "read_threads": args.read_threads,
                "records": index["records"],
                "hours": round(index["hours"], 3),
                "bytes_per_frame": round(size / index["frames"], 1),
                "write_x_realtime": round(index["hours"] * 3600 / write_seconds, 1),
                "cpu_count": os.cpu_count(),
                **overhead,
                "malloc_tuned": tuned,
                "load_average_1min": round(os.getloadavg()[0], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
