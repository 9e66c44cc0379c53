"""Benchmark of the noisify stage: audio seconds produced per second of one core.

Builds a small built-in corpus and noise set in a temporary directory (default-size
utterances), then mixes every training utterance in this process, one core, timing CPU
seconds of everything per utterance: drawing the recipe, reading clean audio and 1-3 noise
segments, room simulation, convolution, mixing and the atomic write. Prints one JSON object.

    python bench/noisify.py [--hours 0.1] [--repeats 2]
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import tempfile
import time

from data_prep import corpus, noise, noisify
from tsasr.recipes.asr import base_config
from tsasr.data import manifest


def measure(clean: list[dict], noises: list[dict], cfg, condition: str, out_dir: str) -> dict:
    mix = functools.partial(noisify._mix_one, seed=0, cfg=cfg.to_dict(), noises=noises, out_dir=out_dir)
    seconds = sum(c["duration"] for c in clean)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for c in clean:
        mix({"clean": c, "condition": condition})
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {
        "audio_seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 3),
        "wall_seconds": round(wall, 3),
        "x_realtime_per_core": round(seconds / cpu, 1),
        "utterances": len(clean),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hours", type=float, default=0.1, help="size of the temporary built-in corpus")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes; the best is reported")
    args = parser.parse_args()
    config = base_config()
    config.corpus.hours = args.hours
    config.corpus.num_speakers = 20
    config.noise.train_minutes, config.noise.test_minutes = 3.0, 1.0
    config.workers = 2
    with tempfile.TemporaryDirectory() as tmp:
        workdir = pathlib.Path(tmp)
        corpus.run(config, workdir)
        noise.run(config, workdir)
        clean = manifest.read_manifest(workdir / "corpus" / "train_labelled.jsonl") + manifest.read_manifest(
            workdir / "corpus" / "train_unlabelled.jsonl"
        )
        test = manifest.read_manifest(workdir / "corpus" / "test.jsonl")
        train_noise = noise.read_noise(workdir / "noise" / "train.jsonl")
        test_noise = noise.read_noise(workdir / "noise" / "test.jsonl")
        runs = [
            measure(clean, train_noise, config.noisify, "train_unlabelled", tmp + "/out") for _ in range(args.repeats)
        ]
        best = max(runs, key=lambda r: r["x_realtime_per_core"])
        rerecorded = measure(test, test_noise, config.noisify, "test_rerecorded", tmp + "/out")
    print(
        json.dumps(
            {
                "x_realtime_per_core": best["x_realtime_per_core"],
                "train_condition": best,
                "all_passes_x_realtime": [r["x_realtime_per_core"] for r in runs],
                "rerecorded_condition": rerecorded,
                "mean_utterance_seconds": round(best["audio_seconds"] / best["utterances"], 3),
                "noises_per_utterance": list(config.noisify.num_noises),
                "image_source_order": config.noisify.max_order,
                "target": 300,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
