"""Resumable, order-preserving parallel map over chunks of items, with a progress bar.

Data preparation (synthesis, mixing) is a pure function of each item and the run seed, so the
result cannot depend on the number of worker processes. Each finished chunk is written as a
part file atomically; a killed run finds its parts and redoes only the missing chunks.
In a multi-host run every process computes its share of the chunks (tsasr.pipeline.share)
into the shared parts directory, with its own pool of workers; after a barrier every process
reads the merged result, which is the same whatever the number of processes.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import pathlib
import shutil
from typing import Callable, Sequence

from tqdm import tqdm

from tsasr import pipeline
from tsasr import workdir as wd

log = logging.getLogger(__name__)


def _run_chunk(args):
    fn, chunk, part = args
    records = [fn(item) for item in chunk]
    wd.write_jsonl(part, records)
    return len(chunk)


def map_resumable(
    fn: Callable[[object], dict],
    items: Sequence,
    parts_dir: pathlib.Path,
    *,
    workers: int = 1,
    chunk_size: int = 32,
    desc: str = "",
    fresh_process_per_chunk: bool = False,
    tally: dict | None = None,
) -> list[dict]:
    """Returns [fn(item) for item in items], computing only chunks without a finished part file.

    `fn` must be picklable (a module-level function or functools.partial of one) and return a
    JSON-serialisable dict. Parts are keyed by chunk index, so `parts_dir` must be cleared by
    the caller when the items or the function change (the pipeline does this per stage key).

    `fresh_process_per_chunk` runs every chunk in a new process forked from a clean server:
    for libraries with hidden global state (espeak-ng's wave generator keeps static pitch
    flutter and phase across utterances), so a chunk's output does not depend on what the
    same process did before, and so not on the number of workers.

    Multi-host: every process of the run must call it with the same items and `parts_dir`
    (on the shared workdir); process p computes the chunks i with i % P == p, then all wait
    at a barrier, read every part, and wait again, so that the caller's process 0 may
    remove the parts as soon as it returns. `tally` (a dict), when given, has added to it
    `chunks` (in all), `mine` (this process's share) and `computed` (the chunks of its share
    it computed, not found finished), for the caller's one log line per stage.
    """
    parts_dir.mkdir(parents=True, exist_ok=True)
    chunks = [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]
    parts = [parts_dir / f"part-{i:06d}.jsonl" for i in range(len(chunks))]
    mine = pipeline.share(len(chunks))
    todo = [(fn, chunks[i], parts[i]) for i in mine if not parts[i].exists()]
    total_items = sum(len(chunks[i]) for i in mine)
    done_items = total_items - sum(len(c) for _, c, _ in todo)
    if tally is not None:
        for name, n in (("chunks", len(chunks)), ("mine", len(mine)), ("computed", len(todo))):
            tally[name] = tally.get(name, 0) + n
    with tqdm(
        total=total_items, initial=done_items, desc=desc, unit="utt", dynamic_ncols=True, disable=None, leave=False
    ) as bar:
        if not todo:
            pass
        elif (workers <= 1 or len(todo) <= 1) and not fresh_process_per_chunk:
            for job in todo:
                bar.update(_run_chunk(job))
        else:
            # forkserver: children fork from a clean server (no JAX or threads from this process),
            # cheaply when the server has preloaded the modules the function needs.
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload([getattr(fn, "func", fn).__module__, "numpy", "scipy.signal"])
            with ctx.Pool(
                max(1, min(workers, len(todo))), maxtasksperchild=1 if fresh_process_per_chunk else None
            ) as pool:
                for n in pool.imap_unordered(_run_chunk, todo):
                    bar.update(n)
    barrier = f"parallel.map_resumable {desc} {parts_dir.name}"
    pipeline.barrier(f"{barrier}: parts written")
    records = []
    for part in parts:
        with open(part, encoding="utf-8") as f:
            records.extend(json.loads(line) for line in f if line.strip())
    pipeline.barrier(f"{barrier}: parts read")
    return records


def log_share(stage: str, did: str, tally: dict) -> None:
    """One INFO line per process of a multi-host run: how many chunks (a map_resumable `tally`)
    this process did, e.g. 'noisify: process 1 of 2 mixed 12 of 24 chunks'. Silent in a
    one-process run."""
    index, count = pipeline.processes()
    if count > 1:
        found = tally.get("mine", 0) - tally.get("computed", 0)
        log.info(
            "%s: process %d of %d %s %d of %d chunks%s",
            stage,
            index,
            count,
            did,
            tally.get("mine", 0),
            tally.get("chunks", 0),
            f" ({found} finished by an earlier run)" if found else "",
        )


def reset(path: pathlib.Path) -> None:
    """Removes a directory of partial results."""
    if path.exists():
        shutil.rmtree(path)


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))
