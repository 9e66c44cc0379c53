"""Benchmark of host memory against corpus size: peak RSS of a training stage's input on 1 h and
8 h of audio, today's in-memory path against the streaming one.

Writes 8 h of built-in-corpus-like utterances (log-normal around 2.5 s, 0.8-8 s; noise as audio:
LFBE costs the same as on speech) as 16-bit wav files with a manifest; the 1 h set is a prefix
of it. Each measurement runs in a fresh process and reports its own peak RSS (ru_maxrss):

- `in_memory`: what a training stage does today (tsasr.recipes.asr.acoustic): LFBE of every
  utterance into a dict (compute_features), the normalisation statistics, the normalised
  features, the targets of every utterance in memory, then one epoch of tsasr.data.batching.
- `stream`: tsasr.data.records.write_split from the manifest (one utterance at a time), then, in
  its own process, what a streaming stage would do: one pass of tsasr.data.loader batches with
  LFBE on the device for the normalisation statistics (tsasr.lfbe.MeanVarStats on the host),
  then one epoch of batches normalised on the device. `peak_rss_mb` is the larger of the two.

The targets are the student's (`--input student`: top-20 senone ids and float16 logits per frame)
or the teacher's (`--input teacher`: a senone alignment). `rss_ratio_8h_vs_1h` is peak RSS on 8 h
over 1 h; the issue's target for the streaming path is <= 1.2. Prints one JSON object.

    python bench/scale.py [--input student] [--hours 1 8]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

TOP_K = 20
BATCH = 16
BOUNDARIES = (256, 512)


def targets(utterance_id: str, frames: int, kind: str) -> dict:
    rng = np.random.default_rng(int(utterance_id.removeprefix("utt")))
    if kind == "teacher":
        return {"senones": rng.integers(0, 2000, frames).astype(np.int32)}
    return {
        "soft_ids": rng.integers(0, 2000, (frames, TOP_K)).astype(np.int32),
        "soft_logits": rng.normal(size=(frames, TOP_K)).astype(np.float16),
    }


def write_corpus(directory: pathlib.Path, hours: float) -> list[dict]:
    from tsasr import workdir as wd

    rng = np.random.default_rng(0)
    manifest, total = [], 0.0
    while total < hours * 3600:
        seconds = float(np.clip(rng.lognormal(np.log(2.5), 0.45), 0.8, 8.0))
        utt = f"utt{len(manifest):07d}"
        audio = (rng.normal(size=int(seconds * 16000)) * 0.1).astype(np.float32)
        wd.write_audio(directory / f"{utt}.wav", audio)
        manifest.append({"id": utt, "audio": str(directory / f"{utt}.wav"), "duration": len(audio) / 16000})
        total += seconds
    return manifest


def frames_of(record: dict) -> int:
    return 1 + (round(record["duration"] * 16000) - 400) // 160


def in_memory(manifest: list[dict], kind: str) -> dict:
    from tsasr.data import batching
    from tsasr.recipes.asr import acoustic

    features = acoustic.compute_features(manifest)
    norm = acoustic.normalisation(features)
    features = acoustic.normalise(features, norm)
    examples = [
        {"id": r["id"], "features": features[r["id"]], **targets(r["id"], frames_of(r), kind)} for r in manifest
    ]
    keys = {k: acoustic.BATCH_KEYS[k] for k in examples[0] if k != "id"}
    batcher = batching.Batcher(examples, batching.BatchingConfig(BATCH, BOUNDARIES, keys=keys))
    frames = sum(batch["feature_paddings"].size for batch in batcher.epoch(0))
    return {"padded_frames": frames}


def write_records(manifest: list[dict], kind: str, directory: str) -> dict:
    from tsasr.data import records

    lengths = {r["id"]: frames_of(r) for r in manifest}
    examples = records.manifest_examples(manifest, lambda utt: targets(utt, lengths[utt], kind))
    index = records.write_split(directory, examples, num_shards=8)
    return {"records": index["records"]}


def stream(directory: str) -> dict:
    import jax

    from tsasr.audio import device_features
    from tsasr.audio import lfbe as lfbe_lib
    from tsasr.data import loader as loader_lib

    loader = loader_lib.Loader(directory, loader_lib.LoaderConfig(BATCH, BOUNDARIES, read_threads=1, prefetch=2))
    raw = jax.jit(lambda audio, lengths: device_features.normalised_lfbe(audio, lengths, 0.0, 1.0))
    stats = lfbe_lib.MeanVarStats(64)
    batches = loader(0)
    for _ in range(loader.batches_per_epoch):  # pass 1: the normalisation statistics
        batch = next(batches)
        features, paddings = raw(batch["audio"], batch["audio_lengths"])
        stats.add(np.asarray(features), np.asarray(paddings))
    mean, std = stats.finalize()
    normalised = jax.jit(lambda audio, lengths: device_features.normalised_lfbe(audio, lengths, mean, std))
    frames = 0
    for _ in range(loader.batches_per_epoch):  # pass 2: an epoch of training input
        batch = next(batches)
        normalised(batch["audio"], batch["audio_lengths"])[0].block_until_ready()
        frames += batch["feature_paddings"].size
    batches.close()
    return {"padded_frames": frames}


def child(args) -> None:
    manifest = [json.loads(line) for line in open(args.manifest)]
    manifest = manifest[: args.count]
    start = time.perf_counter()
    if args.child == "in_memory":
        out = in_memory(manifest, args.input)
    elif args.child == "write":
        out = write_records(manifest, args.input, args.records)
    else:
        out = stream(args.records)
    out["seconds"] = round(time.perf_counter() - start, 1)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(out))


def run_child(*argv) -> dict:
    result = subprocess.run([sys.executable, __file__, *argv], check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--input", choices=("student", "teacher"), default="student")
    parser.add_argument("--hours", type=float, nargs=2, default=(1.0, 8.0))
    parser.add_argument("--child", choices=("in_memory", "write", "stream"))
    parser.add_argument("--manifest")
    parser.add_argument("--records")
    parser.add_argument("--count", type=int)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        manifest = write_corpus(tmp, max(args.hours))
        (tmp / "all.jsonl").write_text("".join(json.dumps(r) + "\n" for r in manifest))
        for hours in args.hours:
            total, count = 0.0, 0
            while count < len(manifest) and total < hours * 3600:
                total, count = total + manifest[count]["duration"], count + 1
            common = ["--manifest", str(tmp / "all.jsonl"), "--count", str(count), "--input", args.input]
            records_dir = str(tmp / f"records_{hours:g}h")
            write = run_child("--child", "write", "--records", records_dir, *common)
            read = run_child("--child", "stream", "--records", records_dir, *common)
            memory = run_child("--child", "in_memory", *common)
            results[f"{hours:g}h"] = {
                "utterances": count,
                "stream": {"peak_rss_mb": max(write["peak_rss_mb"], read["peak_rss_mb"]), "write": write, "read": read},
                "in_memory": memory,
            }
    small, large = (results[f"{h:g}h"] for h in args.hours)
    print(
        json.dumps(
            {
                "input": args.input,
                "peak_rss_mb": {
                    path: {size: results[size][path]["peak_rss_mb"] for size in results}
                    for path in ("stream", "in_memory")
                },
                "rss_ratio_8h_vs_1h": {
                    path: round(large[path]["peak_rss_mb"] / small[path]["peak_rss_mb"], 3)
                    for path in ("stream", "in_memory")
                },
                "details": results,
                "cpu_count": os.cpu_count(),
                "load_average_1min": round(os.getloadavg()[0], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
