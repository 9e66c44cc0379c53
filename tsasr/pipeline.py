"""A recipe's chain of stages, each skipped when its marker matches (knows no recipe).

A stage is a function `(config, workdir) -> summary`; it reads what upstream stages wrote and
writes its outputs (atomically) under the workdir. Its key hashes the config sections it
reads, its code version and the keys of the stages it depends on, so changing a field redoes
the stages that read it and everything downstream, and nothing else. A stage that was
killed resumes from what it finished (its outputs are still keyed by the same stage key).

Three kinds of stage:
- `data`: outputs of another key are stale and removed before the stage runs again.
- `train`: trains a model. Outputs of another key are never deleted: they move to
  WORKDIR/superseded/<output>.<old key>/, so no config change loses a trained model.
- `evaluate`: scores trained systems (its `systems` rows in results.json). It depends on
  the training stages it evaluates, and no training stage depends on an evaluation stage,
  so changing how a system is evaluated reruns only evaluation.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import pickle
import sys
import time
from typing import Callable

import ml_collections

from tsasr import workdir as wd
from tsasr.evaluate import results as results_lib

log = logging.getLogger(__name__)
KINDS = ("data", "train", "evaluate")
SUPERSEDED = "superseded"  # WORKDIR/superseded/<output>.<key>: models of an earlier key


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[ml_collections.ConfigDict, pathlib.Path], dict]
    config_keys: tuple[str, ...]  # config sections (or dotted fields) the stage reads
    deps: tuple[str, ...] = ()  # upstream stages whose outputs it reads
    outputs: tuple[str, ...] = ()  # workdir subdirectories it owns
    version: int = 1  # bump when the stage's outputs change for the same config
    # multi-host: every process runs it (each its share: tsasr.pipeline.share); else process 0, then a barrier
    all_processes: bool = False
    kind: str = "data"  # 'data', 'train' or 'evaluate' (see the module docstring)
    systems: tuple[str, ...] = ()  # evaluate: the systems whose rows it writes into results.json
    # config -> fingerprints of the user data the stage reads (tsasr.data.fingerprint): part of
    # its key, so editing a manifest, an audio file or a noise directory reruns the stage.
    inputs: Callable[[ml_collections.ConfigDict], dict] | None = None
    # (dotted field, value) pairs: fields added to the config after the stage's outputs could
    # exist, each with the value that reproduces what the stage did before it had the field. A
    # field at that value stays out of the key, so adding it retrains and remakes nothing.
    neutral: tuple[tuple[str, object], ...] = ()

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"stage {self.name}: kind must be one of {KINDS}, got {self.kind!r}")


def process_index() -> int:
    """This process's index; 0 unless a multi-host run initialised JAX."""
    return _processes()[0]


_ALONE = [False]  # true while process 0 runs a stage that is not all_processes, the others waiting


def processes() -> tuple[int, int]:
    """(index, count) of the processes that share the work now running: every process of a
    multi-host run, but (0, 1) inside a stage that process 0 runs alone (and in a one-process run)."""
    return (0, 1) if _ALONE[0] else _processes()


def _processes() -> tuple[int, int]:
    """(process index, process count) of the run; (0, 1) unless a multi-host run initialised JAX."""
    jax = sys.modules.get("jax")  # not imported here: loading the runner stays free of JAX
    if jax is None:
        return 0, 1
    return jax.process_index(), jax.process_count()


def _barrier(name: str) -> None:
    from jax.experimental import multihost_utils  # only multi-host runs get here, with JAX loaded

    multihost_utils.sync_global_devices(name)


def barrier(name: str) -> None:
    """Waits until every process of a multi-host run reaches the barrier `name` (the same name
    on all); returns at once in a one-process run."""
    if processes()[1] > 1:
        _barrier(name)


def gather(directory: pathlib.Path, name: str, value) -> list:
    """Every process's `value` (picklable), in process order, passed through files in
    `directory` on the shared workdir: each process writes its own atomically, all wait at a
    barrier, all read. A one-process run gets [value] and writes nothing. Every process must
    make the same calls; the caller removes the files once every process has read them (after
    a later barrier)."""
    index, count = processes()
    if count == 1:
        return [value]
    wd.write_bytes(pathlib.Path(directory) / f"{name}.{index}.pkl", pickle.dumps(value))
    barrier(f"gather {name}")
    return [pickle.loads((pathlib.Path(directory) / f"{name}.{p}.pkl").read_bytes()) for p in range(count)]


def share(count: int) -> range:
    """This process's share of `count` work items (chunks, batches, utterances): the indices
    i with i % process_count == process_index. A stable split, so the items' results, written
    per item and merged in index order, are the same whatever the number of processes."""
    index, total = processes()
    return range(index, count, total)


def _select(config: ml_collections.ConfigDict, dotted: str, neutral: tuple[tuple[str, object], ...] = ()):
    """The config's value at `dotted` (a section as a dict), without the `neutral` fields under
    it that hold their neutral value."""
    node = config
    for part in dotted.split("."):
        node = node[part]
    value = node.to_dict() if isinstance(node, ml_collections.ConfigDict) else node
    for field, default in neutral:
        if not field.startswith(dotted + "."):
            continue
        *parents, name = field[len(dotted) + 1 :].split(".")
        section = value
        for part in parents:
            section = section.get(part) if isinstance(section, dict) else None
        if isinstance(section, dict) and name in section and section[name] == default:
            del section[name]
    return value


def _neutral_here(config: ml_collections.ConfigDict, dotted: str, neutral) -> bool:
    """Whether the field `dotted`, keyed on its own, is one of `neutral` at its neutral value."""
    return any(field == dotted and _select(config, dotted) == default for field, default in neutral)


def check_stages(stages) -> None:
    """Raises ValueError on a duplicate name, a dependency that is not an earlier stage, or a
    training stage that depends on an evaluation stage (evaluation could then retrain)."""
    kinds: dict[str, str] = {}
    for stage in stages:
        if stage.name in kinds:
            raise ValueError(f"stage {stage.name!r} appears twice")
        for dep in stage.deps:
            if dep not in kinds:
                raise ValueError(f"stage {stage.name!r} depends on {dep!r}, which is not an earlier stage")
            if kinds[dep] == "evaluate" and stage.kind != "evaluate":
                raise ValueError(f"{stage.kind} stage {stage.name!r} depends on the evaluation stage {dep!r}")
        kinds[stage.name] = stage.kind


def stage_keys(config: ml_collections.ConfigDict, stages) -> dict[str, str]:
    keys: dict[str, str] = {}
    for stage in stages:
        record = {
            "config": {
                k: _select(config, k, stage.neutral)
                for k in stage.config_keys
                if not _neutral_here(config, k, stage.neutral)
            },
            "deps": {d: keys[d] for d in stage.deps},
            "version": stage.version,
        }
        inputs = stage.inputs(config) if stage.inputs else {}
        if inputs:  # stages that read no user data keep the keys they always had
            record["inputs"] = inputs
        keys[stage.name] = wd.fingerprint(record)
    return keys


def prune_results(config: ml_collections.ConfigDict, workdir: pathlib.Path, stages, keys=None) -> None:
    """Keeps results.json to the systems whose evaluation stage's marker matches the config as
    now keyed: rows of another grid, of another config's stage, or of a stage whose key has
    changed and that has not run again are removed (their hypotheses stay on disk). `keys`:
    the stages' keys when the caller has them (fingerprinting a user's data stats every file)."""
    keys = keys or stage_keys(config, stages)
    current = set()
    for stage in stages:
        marker = wd.read_marker(workdir, stage.name)
        if stage.systems and marker and marker.get("key") == keys[stage.name]:
            current.update(stage.systems)
    removed = results_lib.remove_systems(workdir, keep=current)
    if removed:
        log.info("results.json: removed %s, not produced by this experiment as configured", ", ".join(removed))


def start_clean(stage: Stage, workdir: pathlib.Path, old_key: str | None) -> None:
    """Clears a stage's outputs of another key (`old_key`, None if unknown): a training stage's
    move aside to WORKDIR/superseded/, others go, and its systems' rows leave results.json."""
    for sub in stage.outputs:
        path = workdir / sub
        if not path.exists():
            continue
        if stage.kind == "train":
            keep = workdir / SUPERSEDED / f"{sub.replace('/', '_')}.{old_key or 'unknown'}"
            if keep.exists():
                wd.rmtree(keep)  # the same model, superseded twice
            keep.parent.mkdir(parents=True, exist_ok=True)
            path.rename(keep)
            log.warning("stage %s: its config changed; the model of the old config moved to %s", stage.name, keep)
        else:
            wd.rmtree(path)
    if stage.systems:
        results_lib.remove_systems(workdir, drop=stage.systems)


def run_stages(
    config: ml_collections.ConfigDict, workdir: pathlib.Path, stages, until: str | None = None, keys=None
) -> dict[str, dict]:
    """Runs (or skips) every stage in order; returns {stage: {'status', 'seconds', 'summary'}}.
    `keys`: stage_keys(config, stages) when the caller has computed them."""
    workdir = wd.as_path(workdir)  # a URI stays one (markers are written through epath)
    check_stages(stages)
    if until and until not in {s.name for s in stages}:
        raise ValueError(f"--until {until!r} is not a stage of this recipe: {', '.join(s.name for s in stages)}")
    keys = keys or stage_keys(config, stages)
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
                if index == 0:
                    start_clean(stage, workdir, (marker or started or {}).get("key"))
                if count > 1 and stage.all_processes:
                    _barrier(f"stage {stage.name}: clean")
                if index == 0:
                    wd.write_marker(workdir, f"{stage.name}.started", key, {})
            else:
                log.info("stage %-10s resuming an interrupted run", stage.name)
            if index == 0:
                wd.clear_marker(workdir, stage.name)
            log.info("stage %-10s running", stage.name)
            t0 = time.perf_counter()
            _ALONE[0] = count > 1 and not stage.all_processes
            try:
                summary = stage.run(config, workdir)
            finally:
                _ALONE[0] = False
            seconds = time.perf_counter() - t0
            if index == 0:
                wd.write_marker(workdir, stage.name, key, summary)
                wd.clear_marker(workdir, f"{stage.name}.started")
            log.info("stage %-10s done in %.1f s", stage.name, seconds)
            report[stage.name] = {"status": "ran", "seconds": round(seconds, 2), "summary": summary}
        if count > 1:
            _barrier(f"stage {stage.name}")
        if stage.name == until:
            break
    return report
