"""Metrics: one JSON line per logging step plus TensorBoard events, from process 0 only."""

import json
import os

import jax
import numpy as np

from tsasr import workdir as wd


class MetricsWriter:
    """Appends to `metrics.jsonl` and writes TensorBoard scalars under `directory`.

    A run resumed at `start_step` (its checkpoint's) redoes the steps after it: their lines
    from the killed run are dropped from metrics.jsonl (rewritten atomically) and hidden in
    TensorBoard (purge_step), so each step is logged once.
    """

    def __init__(self, directory: str, start_step: int = 0):
        self.active = jax.process_index() == 0
        self.path = os.path.join(directory, "metrics.jsonl")
        self._tensorboard = None
        if self.active:
            os.makedirs(directory, exist_ok=True)
            if os.path.exists(self.path):
                with open(self.path) as f:
                    lines = f.readlines()
                kept = [line for line in lines if line.endswith("\n") and json.loads(line)["step"] <= start_step]
                if len(kept) < len(lines):  # steps to redo, or a line cut short by the kill
                    wd.write_text(self.path, "".join(kept))
            from tensorboardX import SummaryWriter  # Imported lazily: slow, process 0 only.

            purge = {"purge_step": start_step + 1} if start_step else {}
            self._tensorboard = SummaryWriter(os.path.join(directory, "tensorboard"), **purge)

    def write(self, step: int, scalars: dict) -> None:
        if not self.active:
            return
        record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in scalars.items():
            self._tensorboard.add_scalar(key, float(value), int(step))

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()


def window_summary(window: list[dict], elapsed: float, member: int | None = None) -> dict:
    """The scalars of one metrics line from the host measurements of the steps since the last.

    loss and frame_accuracy are averaged over the window's frames; grad_norm and
    learning_rate are the last step's; frames_per_s counts the window's frames over
    `elapsed` seconds. `member` picks one student of a sweep's measurements, whose every
    value has a leading member axis.
    """
    value = (lambda m, k: float(m[k])) if member is None else (lambda m, k: float(m[k][member]))
    frames = [value(m, "num_frames") for m in window]
    weights = [f + 1e-9 for f in frames]
    scalars = {k: np.average([value(m, k) for m in window], weights=weights) for k in ("loss", "frame_accuracy")}
    scalars["grad_norm"] = value(window[-1], "grad_norm")
    scalars["learning_rate"] = value(window[-1], "learning_rate")
    scalars["frames_per_s"] = sum(frames) / max(elapsed, 1e-9)
    return scalars


def read(directory: str) -> list[dict]:
    """The JSON lines of a run's metrics, in order."""
    with open(os.path.join(directory, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]
