"""Benchmark of each stage's time against corpus size: the main job's stages on 1 h and 8 h of
the built-in corpus, per hour of audio, and which of them grow faster than linearly.

For each size, `python -m tsasr.run experiments/top20_T2.py --config.corpus.hours=H` runs in a
fresh process on a fresh workdir, as a user would run it, with one change: every network trains
a fixed number of steps (TRAINING; the main job trains epochs, whose time is linear in the data by
construction, and 8 h of epochs would take hours on 2 cores). Everything else is the main job's:
the corpus and its noisy copies, the full GMM-HMM alignment, the labelling of every training
utterance, the decoding of every test condition by every system. A training stage's time is then
its passes over the data (features or records, normalisation, held-out loss, labels) plus its
fixed steps. The stage times are those of the run's log ("stage X done in S s").

Prints one JSON object: `stage_seconds` {stage: {size: s}}, `seconds_per_hour` {stage: {size:
s/h}}, `per_hour_ratio` {stage: (s/h at the largest size) / (s/h at the smallest)}, and
`superlinear`: the stages of at least MIN_SECONDS at the largest size whose per-hour time grows by
more than SUPERLINEAR (1.0 is linear; fixed costs such as compiling give ratios below 1).

    python bench/stage_times.py [--hours 1 8] [--workdir-root DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

EXPERIMENT = "experiments/top20_T2.py"
TRAINING = tuple(
    f"--config.{section}.train.{field}={value}"
    for section, steps in (("teacher", 200), ("student", 200), ("sequence", 10))
    for field, value in (("num_epochs", 0), ("num_steps", steps), ("eval_every", steps), ("checkpoint_every", steps))
)
SUPERLINEAR = 1.25
MIN_SECONDS = 10.0
DONE = re.compile(r"stage (\S+)\s+done in ([0-9.]+) s")


def run(workdir: pathlib.Path, hours: float) -> dict[str, float]:
    """Stage -> seconds of the main job at `hours`, from its log."""
    command = [sys.executable, "-m", "tsasr.run", EXPERIMENT, "--workdir", str(workdir)]
    command += [f"--config.corpus.hours={hours:g}", *TRAINING]
    print(f"[stage_times] {time.strftime('%H:%M:%S')} {' '.join(command)}", file=sys.stderr, flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return {m.group(1): float(m.group(2)) for m in DONE.finditer((workdir / "run.log").read_text())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hours", type=float, nargs="+", default=(1.0, 8.0), help="corpus sizes, smallest first")
    parser.add_argument("--workdir-root", help="keep the workdirs here (default: a temporary directory)")
    args = parser.parse_args()
    os.chdir(pathlib.Path(__file__).resolve().parents[1])  # the experiment path is the repository's
    tmp = None if args.workdir_root else tempfile.TemporaryDirectory()
    root = pathlib.Path(args.workdir_root or tmp.name)
    sizes = [f"{h:g}h" for h in args.hours]
    seconds = {}
    for hours, size in zip(args.hours, sizes):
        seconds[size] = run(root / size, hours)
    stages = list(seconds[sizes[-1]])
    per_hour = {s: {size: round(seconds[size][s] / h, 2) for h, size in zip(args.hours, sizes)} for s in stages}
    small, large = sizes[0], sizes[-1]
    ratio = {s: round(per_hour[s][large] / per_hour[s][small], 3) for s in stages if per_hour[s][small] > 0}
    superlinear = [s for s, r in ratio.items() if r > SUPERLINEAR and seconds[large][s] >= MIN_SECONDS]
    print(
        json.dumps(
            {
                "stage_seconds": {s: {size: seconds[size][s] for size in sizes} for s in stages},
                "seconds_per_hour": per_hour,
                "per_hour_ratio": ratio,
                "superlinear": superlinear,
                "total_seconds": {size: round(sum(seconds[size].values()), 1) for size in sizes},
                "cpu_count": os.cpu_count(),
                "load_average_1min": round(os.getloadavg()[0], 2),
            }
        )
    )
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
