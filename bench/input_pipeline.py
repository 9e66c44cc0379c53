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
padding, not of a disk. The issue's target is >= 200,000. Prints one JSON object.

    python bench/input_pipeline.py [--hours 0.25] [--batches 300]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

from tsasr.data import loader as loader_lib
from tsasr.data import records

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hours", type=float, default=0.25, help="audio in the temporary records")
    parser.add_argument("--batches", type=int, default=300, help="timed batches (after 20 of warm-up)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--read-threads", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
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
                "load_average_1min": round(os.getloadavg()[0], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
