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


NOT_AVERAGED = ("weight", "grad_norm", "learning_rate")  # step measurements that are not means over the batch


def window_summary(window: list[dict], elapsed: float, member: int | None = None, unit: str = "frames") -> dict:
    """The scalars of one metrics line from the host measurements of the steps since the last.

    The loss and every metric of the loss are averaged over the window, each step weighted by
    its `weight` (what the loss counts: frames, clips); grad_norm and learning_rate are the
    last step's; `<unit>_per_s` counts the window's weight over `elapsed` seconds. `member`
    picks one member of a member-axis run (a sweep), whose every value has a leading axis.
    """
    value = (lambda m, k: float(m[k])) if member is None else (lambda m, k: float(m[k][member]))
    counts = [value(m, "weight") for m in window]
    weights = [c + 1e-9 for c in counts]
    averaged = ["loss"] + sorted(k for k in window[0] if k not in NOT_AVERAGED and k != "loss")
    scalars = {k: np.average([value(m, k) for m in window], weights=weights) for k in averaged}
    scalars["grad_norm"] = value(window[-1], "grad_norm")
    scalars["learning_rate"] = value(window[-1], "learning_rate")
    scalars[f"{unit}_per_s"] = sum(counts) / max(elapsed, 1e-9)
    return scalars


def read(directory: str) -> list[dict]:
    """The JSON lines of a run's metrics, in order."""
    with open(os.path.join(directory, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]
