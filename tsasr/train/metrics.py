"""Metrics: one JSON line per logging step plus TensorBoard events, from process 0 only."""

import json
import os

import jax


class MetricsWriter:
    """Appends to `metrics.jsonl` and writes TensorBoard scalars under `directory`."""

    def __init__(self, directory: str):
        self.active = jax.process_index() == 0
        self.path = os.path.join(directory, "metrics.jsonl")
        self._tensorboard = None
        if self.active:
            os.makedirs(directory, exist_ok=True)
            from tensorboardX import SummaryWriter  # Imported lazily: slow, process 0 only.

            self._tensorboard = SummaryWriter(os.path.join(directory, "tensorboard"))

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


def read(directory: str) -> list[dict]:
    """The JSON lines of a run's metrics, in order."""
    with open(os.path.join(directory, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]
