"""The recipe as a chain of stages, each skipped when its marker matches.

A stage is a function `(config, workdir) -> summary`; it reads what upstream stages wrote and
writes its outputs (atomically) under the workdir. Its key hashes the config sections it
reads, its code version and the keys of the stages it depends on, so changing a field redoes
the stages that read it and everything downstream, and nothing else. A stage whose key
changed starts from clean output directories; one that was killed resumes from the chunks
it finished (its outputs are still keyed by the same stage key).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import pathlib
import shutil
import sys
import time
from typing import Callable

import ml_collections

from tsasr import workdir as wd

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[ml_collections.ConfigDict, pathlib.Path], dict]
    config_keys: tuple[str, ...]  # top-level config sections (or fields) the stage reads
    deps: tuple[str, ...] = ()  # upstream stages whose outputs it reads
    outputs: tuple[str, ...] = ()  # workdir subdirectories it owns
    version: int = 1  # bump when the stage's outputs change for the same config
    all_processes: bool = False  # multi-host: every process runs it (training); else process 0, then a barrier


def _lazy(module: str, function: str) -> Callable[[ml_collections.ConfigDict, pathlib.Path], dict]:
    """A stage function imported when the stage runs: loading the runner stays free of JAX and Kaldi."""

    def run(config, workdir):
        return getattr(importlib.import_module(module), function)(config, workdir)

    run.__name__ = f"{module}.{function}"
    return run


STAGES: tuple[Stage, ...] = (
    Stage("corpus", _lazy("data_prep.corpus", "run"), ("seed", "corpus"), outputs=("corpus",), version=2),
    Stage("noise", _lazy("data_prep.noise", "run"), ("seed", "noise"), outputs=("noise",)),
    Stage(
        "noisify",
        _lazy("data_prep.noisify", "run"),
        ("seed", "noisify", "corpus.min_duration", "corpus.alphabet", "corpus.on_bad_input"),
        deps=("corpus", "noise"),
        outputs=("noisy",),
        version=2,  # RIR tails drawn for their own samples only, noise gains applied to the responses
    ),
    Stage(
        "align", _lazy("tsasr.hmm.stages", "align"), ("hmm",), deps=("corpus",), outputs=("lang", "align"), version=2
    ),
    Stage("graph", _lazy("tsasr.hmm.stages", "graph"), ("hmm",), deps=("align",), outputs=("graph",), version=2),
    Stage(
        "gmm",
        _lazy("tsasr.hmm.stages", "gmm_baseline"),
        ("hmm.gmm_baseline", "decode"),
        deps=("align", "graph", "noisify"),
        outputs=("decode/gmm",),
        version=2,
    ),
    Stage(
        "teacher_ce",
        _lazy("tsasr.train.teacher", "run"),
        ("seed", "teacher", "decode"),
        deps=("align", "graph", "gmm", "noisify"),
        outputs=("teacher_ce", "decode/teacher_ce"),
        all_processes=True,
    ),
    Stage(
        "teacher_seq",
        _lazy("tsasr.train.sequence", "run_teacher"),
        ("seed", "sequence", "decode"),
        deps=("teacher_ce",),
        outputs=("teacher_seq", "decode/teacher_seq"),
        all_processes=True,
        version=2,  # repeated phones split, numerators weighted by the phone LM
    ),
    Stage(
        "label",
        _lazy("tsasr.distill.label", "run"),
        ("student.teacher", "student.label_top_k", "student.label_shards", "student.online"),
        deps=("teacher_ce", "teacher_seq"),
        outputs=("labels",),
        all_processes=True,
        version=2,  # CPU top-k: equal logits by lower id, as jax.lax.top_k (argpartition's order before)
    ),
    Stage(
        "student_ce",
        _lazy("tsasr.distill.student", "run"),
        ("seed", "student", "decode"),
        deps=("label", "noisify", "teacher_seq"),
        outputs=("student_ce", "decode/student_ce"),
        all_processes=True,
    ),
    Stage(
        "student_seq",
        _lazy("tsasr.train.sequence", "run_student"),
        ("seed", "sequence", "decode"),
        deps=("student_ce", "teacher_seq"),
        outputs=("student_seq", "decode/student_seq"),
        all_processes=True,
        version=2,  # repeated phones split, numerators weighted by the phone LM
    ),
    Stage(
        "multicondition_ce",
        _lazy("tsasr.train.teacher", "run_multicondition"),
        ("seed", "baselines", "teacher", "decode"),
        deps=("align", "graph", "noisify", "teacher_ce"),
        outputs=("multicondition_ce", "decode/multicondition_ce"),
        all_processes=True,
    ),
    Stage(
        "multicondition_seq",
        _lazy("tsasr.train.sequence", "run_multicondition"),
        ("seed", "baselines", "sequence", "decode"),
        deps=("multicondition_ce", "teacher_seq"),
        outputs=("multicondition_seq", "decode/multicondition_seq"),
        all_processes=True,
        version=2,  # repeated phones split, numerators weighted by the phone LM
    ),
)


def _processes() -> tuple[int, int]:
    """(process index, process count); (0, 1) unless a multi-host run initialised JAX."""
    jax = sys.modules.get("jax")
    if jax is None:
        return 0, 1
    return jax.process_index(), jax.process_count()


def _barrier(name: str) -> None:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def _select(config: ml_collections.ConfigDict, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node.to_dict() if isinstance(node, ml_collections.ConfigDict) else node


def stage_keys(config: ml_collections.ConfigDict, stages=STAGES) -> dict[str, str]:
    keys: dict[str, str] = {}
    for stage in stages:
        keys[stage.name] = wd.fingerprint(
            {
                "config": {k: _select(config, k) for k in stage.config_keys},
                "deps": {d: keys[d] for d in stage.deps},
                "version": stage.version,
            }
        )
    return keys


def scored_systems(stage: Stage) -> tuple[str, ...]:
    """The systems whose rows `stage` writes into results.json: its decode/<system> outputs."""
    return tuple(o.split("/", 1)[1] for o in stage.outputs if o.startswith("decode/"))


def _prune_results(config: ml_collections.ConfigDict, workdir: pathlib.Path, stages, keys: dict[str, str]) -> None:
    """Keeps results.json to the systems whose stage's outputs match the config as now keyed, among
    this run's stages and the recipe's (a sweep keeps the recipe's students if their config is
    the sweep's): rows of another grid, of another config's stage, or of a stage whose key has
    changed and that has not run again are removed (their decode/ hypotheses stay on disk)."""
    from tsasr.decode import results as results_lib

    recipe_keys = stage_keys(config, STAGES)
    by_name = {s.name: (s, recipe_keys[s.name]) for s in STAGES} | {s.name: (s, keys[s.name]) for s in stages}
    current = set()
    for name, (stage, key) in by_name.items():  # each stage's marker read once
        marker = wd.read_marker(workdir, name)
        if marker and marker.get("key") == key:
            current.update(scored_systems(stage))
    removed = results_lib.remove_systems(workdir, keep=current)
    if removed:
        log.info("results.json: removed %s, not produced by this experiment as configured", ", ".join(removed))


def run_stages(
    config: ml_collections.ConfigDict, workdir: pathlib.Path, stages=STAGES, until: str | None = None
) -> dict[str, dict]:
    """Runs (or skips) every stage in order; returns {stage: {'status', 'seconds', 'summary'}}."""
    workdir = pathlib.Path(workdir)
    keys = stage_keys(config, stages)
    report = {}
    index, count = _processes()
    for stage in stages:
        key = keys[stage.name]
        marker = wd.read_marker(workdir, stage.name)
        if count > 1 and not stage.all_processes and index != 0:
            _barrier(f"stage {stage.name}")  # process 0 runs host-side stages on the shared workdir
            marker = wd.read_marker(workdir, stage.name) or {"summary": {}}
            report[stage.name] = {"status": "process 0", "seconds": 0.0, "summary": marker["summary"]}
            if stage.name == until:
                break
            continue
        if marker and marker.get("key") == key:
            log.info("stage %-10s up to date (key %s), skipped", stage.name, key)
            report[stage.name] = {"status": "skipped", "seconds": 0.0, "summary": marker["summary"]}
        else:
            started = wd.read_marker(workdir, f"{stage.name}.started")
            if started is None or started.get("key") != key:
                # Outputs from another key (or an unknown one) are stale: start clean.
                for sub in stage.outputs:
                    if (workdir / sub).exists():
                        shutil.rmtree(workdir / sub)
                if index == 0 and scored_systems(stage):
                    from tsasr.decode import results as results_lib

                    results_lib.remove_systems(workdir, drop=scored_systems(stage))
                wd.write_marker(workdir, f"{stage.name}.started", key, {})
            else:
                log.info("stage %-10s resuming an interrupted run", stage.name)
            wd.clear_marker(workdir, stage.name)
            log.info("stage %-10s running", stage.name)
            t0 = time.perf_counter()
            summary = stage.run(config, workdir)
            seconds = time.perf_counter() - t0
            wd.write_marker(workdir, stage.name, key, summary)
            wd.clear_marker(workdir, f"{stage.name}.started")
            log.info("stage %-10s done in %.1f s", stage.name, seconds)
            report[stage.name] = {"status": "ran", "seconds": round(seconds, 2), "summary": summary}
        if count > 1 and not stage.all_processes:
            _barrier(f"stage {stage.name}")
        if stage.name == until:
            break
    if index == 0:
        _prune_results(config, workdir, stages, keys)
    return report
