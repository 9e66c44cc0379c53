"""Benchmark of host memory against corpus size: peak RSS of the whole `student_ce` stage on 1 h
and 8 h of the built-in corpus, its training data streamed (`student.input='stream'`: ArrayRecord
shards of the noisy copies and their soft labels, LFBE in the step) and in memory
(`student.input='memory'`: every utterance's LFBE and soft labels on the host).

Preparation. For each size (`--config.corpus.hours=H`: all four splits; the student trains on the
noisy copies of train_labelled + train_unlabelled, about 93 % of it) the recipe of
experiments/top20_T2.py prepares WORKDIR_ROOT/<H>h up to the student's inputs, `label`, running only
the stages `label` depends on: corpus, noise, noisify, align, teacher_ce, teacher_seq, label (not
graph, gmm, oov or the decode stages, which `python -m tsasr.run --until label` runs too). A stage's
key is its own config fields and its dependencies' keys, so the filtered chain keys each stage as
the runner does, and a rerun skips what is prepared. To keep 8 h affordable on 2 cores the GMM's EM
passes and both teachers' training are cut short (PREPARE): the teacher's quality does not matter
for memory, only the shape of what it writes (top-40 labels for every frame of every clean training
utterance, 55 MB per hour of training data). 8 h took 10 minutes here, 1 h under 2.

Measurement. Then, each in a fresh process (ru_maxrss is the stage's own: JAX, its data, its
training), `student_ce` alone runs from scratch (its model, records and markers removed; every
earlier stage is up to date and skipped), once per input, with 60 training steps (STUDENT): memory
is set by the data path, not the step count, and the stream path makes its full passes over the
input before the first step anyway (it writes the records of every training utterance, then the
normalisation: one pass of LFBE over them).

Expected: the stream path's host memory is O(batch), independent of the corpus (the issue's target:
`rss_ratio_8h_vs_1h` <= 1.2); the memory path's grows with the corpus. The stream path's peak is set
by the training step (XLA's compilation and buffers: 1.0-1.3 GB of anonymous memory with 800
senones), which varies by about 150 MB from run to run: `--repeats N` runs every measurement N times
and keeps the largest peak. The senone tree grows with the data up to hmm.num_senones (800, reached
at 1 h): a smaller corpus has a smaller output layer and step.

Measured 2026-12-06, 2 CPU cores shared at load 5-6, `--repeats 2`: stream 1319 MB (1 h) and 1444 MB
(8 h), ratio 1.09; memory 1606 and 4284 MB, ratio 2.67; the stage took 52 / 82 s streamed and
45 / 49 s in memory. Before student.py read the soft labels for the records through a reader of
their own, the stage's reader kept every memory-mapped label page the records pass had touched
resident through training (55 MB per hour of training data): stream 1379 and 1713 MB, ratio 1.24.
What still grows with the corpus in the stream path, below the training step's peak at 8 h: the
records pass maps every label page while it writes (file-backed, unmapped when it ends; from about
15 h of training data it would set the peak), and the held-out 5 % of the utterances stays in
memory with its features and labels (compute_features reads all their audio at once: about 20 MB
per hour of training data before training, freed for the step to reuse).

Prints one JSON object: `peak_rss_mb` {input: {size: MB}}, `rss_ratio_8h_vs_1h` {input: ratio} (for
other sizes `rss_ratio_<large>_vs_<small>`), per-size training data, seconds, cpu_count and load.

    python bench/scale.py [--hours 1 8] [--workdir-root DIR] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile
import time

EXPERIMENT = "experiments/top20_T2.py"
INPUTS = ("stream", "memory")
# The stages the student's inputs depend on, and the student.
NEEDED = ("corpus", "noise", "noisify", "align", "teacher_ce", "teacher_seq", "label", "student_ce")
PREPARE = (  # shortened GMM and teachers: the labels' shapes, not their quality, set the student's memory
    "--config.hmm.mono_iters=4",
    "--config.hmm.mono_realign_every=2",
    "--config.hmm.tri_iters=2",
    "--config.hmm.tri_realign_every=2",
    "--config.teacher.train.num_epochs=0",
    "--config.teacher.train.num_steps=20",
    "--config.teacher.train.eval_every=20",
    "--config.teacher.train.checkpoint_every=20",
    "--config.sequence.train.num_epochs=0",
    "--config.sequence.train.num_steps=2",
    "--config.sequence.train.eval_every=2",
    "--config.sequence.train.checkpoint_every=2",
)
STUDENT = (
    "--config.student.train.num_epochs=0",
    "--config.student.train.num_steps=60",
    "--config.student.train.eval_every=60",
    "--config.student.train.checkpoint_every=60",
)


def overrides(hours: float, student_input: str) -> list[str]:
    return [f"--config.corpus.hours={hours:g}", *PREPARE, *STUDENT, f"--config.student.input={student_input}"]


def run_stages(workdir: pathlib.Path, hours: float, student_input: str, until: str) -> dict:
    """What `python -m tsasr.run EXPERIMENT --until UNTIL` does, on the NEEDED stages only."""
    from tsasr import parallel, pipeline
    from tsasr import run as run_lib
    from tsasr import workdir as wd

    config, recipe = run_lib.load(EXPERIMENT, False, overrides(hours, student_input))
    if config.workers <= 0:
        with config.unlocked():
            config.workers = parallel.default_workers()
    stages = [s for s in recipe.stages(config) if s.name in NEEDED]
    run_lib.setup_logging(workdir)
    wd.write_json(workdir / "config.json", config.to_dict())
    return pipeline.run_stages(config, workdir, stages=stages, until=until)


def clear_student(workdir: pathlib.Path) -> None:
    """Removes what `student_ce` made (and superseded models), so it runs from scratch."""
    for sub in ("student_ce", "records/student_ce", "superseded"):
        shutil.rmtree(workdir / sub, ignore_errors=True)
    for marker in ("student_ce", "student_ce.started"):
        (workdir / ".stages" / f"{marker}.json").unlink(missing_ok=True)


def training_data(workdir: pathlib.Path, heldout_percent: int = 5) -> dict:
    """Utterances and hours of the student's noisy training data (and its held-out share)."""
    from tsasr.recipes.asr import acoustic, student
    from tsasr.recipes.asr import teacher as teacher_stage

    records = [r for split in student.SPLITS for r in acoustic.read(workdir, split)]
    held = [r for r in records if teacher_stage.heldout(r.get("clean_id", r["id"]), heldout_percent)]
    return {
        "utterances": len(records),
        "hours": round(sum(r["duration"] for r in records) / 3600, 3),
        "heldout_utterances": len(held),
        "heldout_hours": round(sum(r["duration"] for r in held) / 3600, 3),
        # The senone tree grows with the data up to hmm.num_senones (800, reached at about 1 h): below
        # that the student's output layer, and its step's buffers, are smaller.
        "num_senones": json.loads((workdir / "align" / "summary.json").read_text())["num_senones"],
    }


def child(args) -> None:
    from tsasr.train import malloc

    malloc.tune()  # as tsasr.run does, before JAX starts its threads
    workdir = pathlib.Path(args.workdir)
    start = time.perf_counter()
    if args.child == "prepare":
        report = run_stages(workdir, args.hours[0], "memory", "label")
        out = {"stages": {name: info["status"] for name, info in report.items()}, **training_data(workdir)}
    else:
        clear_student(workdir)
        report = run_stages(workdir, args.hours[0], args.child, "student_ce")
        info = report["student_ce"]
        if info["status"] != "ran":
            raise RuntimeError(f"student_ce did not run: {info['status']}")
        out = {"stage_seconds": info["seconds"], "summary": info["summary"]}
    out["seconds"] = round(time.perf_counter() - start, 1)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out["children_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    print(json.dumps(out, default=str))


def run_child(log, *argv) -> dict:
    """A fresh process; its stderr (the stage log) goes to `log`, its last stdout line is the result."""
    print(f"[scale] {time.strftime('%H:%M:%S')} {' '.join(argv)}", file=log, flush=True)
    command = [sys.executable, __file__, *argv]
    result = subprocess.run(command, check=True, stdout=subprocess.PIPE, stderr=log, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hours", type=float, nargs="+", default=(1.0, 8.0), help="corpus sizes, smallest first")
    parser.add_argument("--workdir-root", help="prepared workdirs, root/<H>h (kept; default a temporary directory)")
    parser.add_argument("--inputs", nargs="+", choices=INPUTS, default=INPUTS)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each measurement; the largest peak counts")
    parser.add_argument("--child", choices=("prepare", *INPUTS))
    parser.add_argument("--workdir")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    os.chdir(pathlib.Path(__file__).resolve().parents[1])  # the experiment path is the repository's
    tmp = None if args.workdir_root else tempfile.TemporaryDirectory()
    root = pathlib.Path(args.workdir_root or tmp.name)
    log = sys.stderr
    sizes, data, seconds = [f"{h:g}h" for h in args.hours], {}, {}
    peak = {name: {} for name in args.inputs}
    details = {name: {} for name in args.inputs}
    try:
        for hours, size in zip(args.hours, sizes):
            workdir = root / size
            prepared = run_child(log, "--child", "prepare", "--workdir", str(workdir), "--hours", f"{hours:g}")
            data[size] = {
                k: prepared[k] for k in ("utterances", "hours", "heldout_utterances", "heldout_hours", "num_senones")
            }
            seconds[size] = {"prepare": prepared["seconds"]}
            for name in args.inputs:
                argv = ("--child", name, "--workdir", str(workdir), "--hours", f"{hours:g}")
                runs = [run_child(log, *argv) for _ in range(args.repeats)]
                peak[name][size] = max(out["peak_rss_mb"] for out in runs)
                seconds[size][name] = min(out["seconds"] for out in runs)  # the least disturbed by other jobs
                details[name][size] = {
                    "peak_rss_mb_of_each_run": [out["peak_rss_mb"] for out in runs],
                    "stage_seconds_of_each_run": [out["stage_seconds"] for out in runs],
                    "children_peak_rss_mb": max(out["children_peak_rss_mb"] for out in runs),
                    "steps": runs[0]["summary"].get("steps"),
                }
            shutil.rmtree(workdir / "superseded", ignore_errors=True)
    finally:
        if tmp is not None:
            tmp.cleanup()
    small, large = sizes[0], sizes[-1]
    print(
        json.dumps(
            {
                "peak_rss_mb": peak,
                f"rss_ratio_{large}_vs_{small}": {
                    name: round(peak[name][large] / peak[name][small], 3) for name in peak
                },
                "training_data": data,
                "seconds": seconds,
                "details": details,
                "workdir_root": str(root) if args.workdir_root else None,
                "cpu_count": os.cpu_count(),
                "load_average": [round(x, 2) for x in os.getloadavg()],
            }
        )
    )


if __name__ == "__main__":
    main()
