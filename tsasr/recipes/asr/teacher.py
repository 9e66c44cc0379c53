"""Training stages `teacher_ce` (and `multicondition_ce`): frame-level cross-entropy on the
labelled alignments, with the held-out frame accuracy.

Read top to bottom: features -> normalisation -> examples -> train -> held-out evaluation.
`fit` trains any acoustic model on prepared examples (the student's stage calls it with soft
targets); `train_frame_ce` is the teacher's recipe, which the multi-condition baseline runs on
noisy data. Decoding is an evaluation stage of its own (tsasr.recipes.asr.evaluate).

With `input='stream'` the training set is not held in memory: its audio and alignments are
written once as ArrayRecord shards (WORKDIR/records/<stage>/, tsasr.data.records), read by a
Grain loader (tsasr.data.loader) and turned into normalised LFBE inside the jitted step
(tsasr.audio.device_features); the small held-out set stays in memory as features. The
stored-noise student streams its records the same way (`streamed_records`, with its own targets).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import zlib
from collections.abc import Callable, Iterable

import jax
import numpy as np

from tsasr import pipeline
from tsasr import workdir as wd
from tsasr.audio import device_features
from tsasr.data import batching
from tsasr.data import layout
from tsasr.data import loader as loader_lib
from tsasr.data import records as records_lib
from tsasr.models import build_model
from tsasr.recipes.asr import acoustic
from tsasr.recipes.asr import objectives
from tsasr.train import loop
from tsasr.train import step as step_lib
from tsasr.train.config import network_train_config

log = logging.getLogger(__name__)
INPUTS = ("memory", "stream")  # a training section's `input`: features in host memory, or streamed records


def heldout(utt_id: str, percent: int) -> bool:
    """A fixed, hash-based share of utterances kept out of training."""
    return zlib.crc32(utt_id.encode()) % 100 < percent


@dataclasses.dataclass
class TrainingSet:
    """What a stage prepared for `fit`: normalised examples (acoustic.BATCH_KEYS), the held-out
    ones, the normalisation they were made with, and the size of the output layer. With `stream`
    the training examples are its batches of audio instead (`examples` is empty): a
    loader_lib.Loader, or any batch source with its `batches_per_epoch`, `index` (`records`,
    `frames`) and `__call__(start_step)`. `dev` replaces the held-out examples by a batch source
    with `epoch()`; `on_device(loss_fn)` the loss on the stream's batches (default
    `on_audio_or_features`: LFBE of `audio` in the step)."""

    examples: list[dict]
    heldout: list[dict]
    norm: dict
    num_senones: int
    stream: loader_lib.Loader | None = None
    dev: object | None = None
    on_device: Callable[[Callable], Callable] | None = None


def batching_config(config, cfg, **options) -> batching.BatchingConfig:
    """The batching of a training section (`cfg`: batch_size, bucket_boundaries), seeded by the run."""
    return batching.BatchingConfig(
        batch_size=cfg.batch_size,
        bucket_boundaries=tuple(cfg.bucket_boundaries),
        seed=int(config.seed),
        keys=acoustic.BATCH_KEYS,
        **options,
    )


def frame_loss(model, train_cfg, **options) -> Callable:
    """objectives.make_loss_fn for `model` at the training config's precision."""
    return objectives.make_loss_fn(
        model, model.config.subsampling, step_lib.compute_dtype(train_cfg.compute_dtype), **options
    )


def on_audio_or_features(loss_fn: Callable, norm: dict) -> Callable:
    """`loss_fn` on streamed batches (`audio`: normalised LFBE computed in the step,
    device_features.on_audio) and on in-memory ones (`features`: the held-out set), so one loss
    serves training and the dev evaluation of tsasr.train.loop. The branch is on the batch's keys,
    fixed when the step is traced."""
    streamed = device_features.on_audio(loss_fn, norm)

    def loss(params, batch, rng, train=True, **frozen):
        return (streamed if "audio" in batch else loss_fn)(params, batch, rng, train, **frozen)

    return loss


def fit(
    config,
    cfg,
    workdir: pathlib.Path,
    name: str,
    data: TrainingSet,
    *,
    make_loss: Callable | None = None,
    frozen=None,
) -> dict:
    """Trains `cfg.model` on `data` (senones or soft targets), evaluates the held-out examples;
    returns a summary. Writes WORKDIR/<name>/ (model.json, norm.json, checkpoints, metrics).

    make_loss(model, train_cfg) -> loss_fn replaces plain frame CE (frame_loss); `frozen`
    params reach it in every step (an online teacher).
    """
    out = pathlib.Path(workdir) / name
    model_fields = {**cfg.model.to_dict(), "num_senones": data.num_senones}
    model = build_model(model_fields)
    wd.write_json(out / "model.json", model_fields)
    wd.write_json(out / "norm.json", data.norm)
    train_cfg = network_train_config(config, cfg)
    if data.stream is None:
        batcher = batching.Batcher(
            data.examples, batching_config(config, cfg), jax.process_index(), jax.process_count()
        )
        train_cfg.feature_dim = int(data.examples[0]["features"].shape[1])
        utterances, frames = len(data.examples), int(sum(len(e["features"]) for e in data.examples))
    else:
        batcher = data.stream
        train_cfg.feature_dim = len(data.norm["mean"])
        utterances, frames = int(batcher.index["records"]), int(batcher.index["frames"])
    train_cfg.num_steps = loop.resolve_num_steps(train_cfg, batcher.batches_per_epoch, name)
    dev = data.dev
    if dev is None and data.heldout:
        dev = batching.Batcher(data.heldout, batching_config(config, cfg, drop_remainder=False))
    loss_fn = make_loss(model, train_cfg) if make_loss else frame_loss(model, train_cfg)
    if data.on_device is not None:
        loss_fn = data.on_device(loss_fn)
    elif data.stream is not None:
        loss_fn = on_audio_or_features(loss_fn, data.norm)
    state = loop.train(
        train_cfg, model, loss_fn, batcher, str(out), frozen=frozen, dev_batches=dev.epoch if dev else None
    )
    summary = {
        "utterances": utterances,
        "frames": frames,
        "num_senones": data.num_senones,
        "steps": int(train_cfg.num_steps),
        "epochs": round(train_cfg.num_steps / batcher.batches_per_epoch, 2),
    }
    if dev and (out / "best.json").exists():  # evaluated during training: the best state is the model
        best = json.loads((out / "best.json").read_text())
        summary.update(
            best_step=best["step"],
            heldout_frame_accuracy=round(best["dev_frame_accuracy"], 4),
            heldout_loss=round(best["dev_loss"], 4),
        )
    elif dev:
        evaluation = loop.evaluate(model, state.params, loss_fn, dev.epoch(), frozen=frozen)
        summary["heldout_frame_accuracy"] = round(evaluation["frame_accuracy"], 4)
        summary["heldout_loss"] = round(evaluation["loss"], 4)
    return summary


def train_frame_ce(config, cfg, workdir: pathlib.Path, name: str, records: list[dict]) -> dict:
    """Frame cross-entropy against the alignments of `records` (by `clean_id` for noisy copies)."""
    workdir = pathlib.Path(workdir)
    alignments = np.load(workdir / "align" / "senones.npz")
    num_senones = int(json.loads((workdir / "align" / "summary.json").read_text())["num_senones"])
    aligned = [r for r in records if r.get("clean_id", r["id"]) in alignments.files]
    if len(aligned) < len(records):
        log.info(
            "%s: %d of %d utterances have no alignment (excluded by the align stage), skipped",
            name,
            len(records) - len(aligned),
            len(records),
        )
    if cfg.input not in INPUTS:
        raise ValueError(f"{name}: input={cfg.input!r}, expected one of {INPUTS}")
    if cfg.input == "stream":
        data = streamed_training_set(config, cfg, workdir, name, aligned, alignments, num_senones)
        return fit(config, cfg, workdir, name, data)
    features = acoustic.compute_features(aligned, f"{name}: features")
    train_ids = [r["id"] for r in aligned if not heldout(r["id"], cfg.heldout_percent)]
    norm = acoustic.normalisation({u: features[u] for u in train_ids}, cfg.utterance_mean)
    features = acoustic.normalise(features, norm)
    examples = {False: [], True: []}
    for r in aligned:
        examples[heldout(r["id"], cfg.heldout_percent)].append(
            {"id": r["id"], "features": features[r["id"]], "senones": alignments[r.get("clean_id", r["id"])]}
        )
    return fit(config, cfg, workdir, name, TrainingSet(examples[False], examples[True], norm, num_senones))


def write_records(directory: pathlib.Path, train: list[dict], alignments, cfg) -> None:
    """Writes the manifest records `train` with their alignments (a noisy copy's by its
    `clean_id`) as cfg.record_shards ArrayRecord shards in `directory`, unless a complete split of
    as many utterances and shards is there (a resumed run), with their normalisation
    (write_normalised_records)."""
    examples = lambda: records_lib.manifest_examples(  # noqa: E731
        ({**r, "clean_id": r.get("clean_id", r["id"])} for r in train),
        lambda clean_id: {"senones": alignments[clean_id]},
        by="clean_id",
    )
    write_normalised_records(directory, examples, len(train), cfg)


def write_normalised_records(
    directory: pathlib.Path, examples: Callable[[], Iterable[dict]], count: int, cfg, source: dict | None = None
) -> None:
    """records_lib.write_split_once of `examples` in cfg.record_shards shards (`source`: what
    they are made from), and their normalisation, computed from the records' audio in one pass,
    as DIRECTORY/norm.json (kept too, unless the records are written again)."""
    index = records_lib.write_split_once(
        directory, examples, count, cfg.record_shards, stale=("norm.json",), source=source
    )
    norm_path = directory / "norm.json"
    if wd.exists(norm_path):
        norm = wd.read_json(norm_path)
        if norm["utterance_mean"] == bool(cfg.utterance_mean):
            return
    audios = (
        r[records_lib.AUDIO] for path in records_lib.shard_paths(directory, index) for r in records_lib.read_shard(path)
    )
    wd.write_json(norm_path, device_features.normalisation(audios, cfg.utterance_mean))


def streamed_records(
    config, cfg, name: str, directory: pathlib.Path, write: Callable[[], None]
) -> tuple[loader_lib.Loader, dict]:
    """(loader, norm) of a stage's training records in `directory`, which `write()` writes unless
    they are complete (with their norm.json, write_normalised_records). The normalisation is one
    pass over the audio, kept beside the shards so a resumed run (or another process) does not redo it."""
    return records_loader(config, cfg, name, directory, write), wd.read_json(directory / "norm.json")


def records_loader(config, cfg, name: str, directory: pathlib.Path, write: Callable[[], None]) -> loader_lib.Loader:
    """This process's loader of the records in `directory`: `write()` runs on process 0 while the
    others wait at a barrier, then every process reads only its own shards (tsasr.data.loader)."""
    if jax.process_index() == 0:
        write()
    pipeline.barrier(f"{name}: records written")
    return loader_lib.Loader(directory, loader_config(config, cfg), jax.process_index(), jax.process_count())


def loader_config(config, cfg) -> loader_lib.LoaderConfig:
    """The streaming loader's options of a training section `cfg`. Its row groups are its record
    shards (cfg.loader_groups = 0) or cfg.loader_groups: the global batches depend on them, never
    on the number of processes, so a run gives the same batches on 1 host as on 8 (any process
    count dividing the groups)."""
    return loader_lib.LoaderConfig(
        batch_size=cfg.batch_size,
        bucket_boundaries=tuple(cfg.bucket_boundaries),
        seed=int(config.seed),
        groups=int(cfg.loader_groups or cfg.record_shards),
        num_workers=int(cfg.loader_workers),
    )


def streamed_training_set(
    config, cfg, workdir: pathlib.Path, name: str, aligned: list[dict], alignments, num_senones: int
) -> TrainingSet:
    """`train_frame_ce`'s TrainingSet with the training utterances streamed from
    WORKDIR/records/<name>/ (written here unless complete) and the held-out ones in memory."""
    directory = workdir / "records" / name
    train = [r for r in aligned if not heldout(r["id"], cfg.heldout_percent)]
    stream, norm = streamed_records(
        config, cfg, name, directory, lambda: write_records(directory, train, alignments, cfg)
    )
    held = [r for r in aligned if heldout(r["id"], cfg.heldout_percent)]
    features = acoustic.normalise(acoustic.compute_features(held, f"{name}: held-out features"), norm) if held else {}
    held_examples = [
        {"id": r["id"], "features": features[r["id"]], "senones": alignments[r.get("clean_id", r["id"])]} for r in held
    ]
    return TrainingSet([], held_examples, norm, num_senones, stream=stream)


def run_multicondition(config, workdir: pathlib.Path) -> dict:
    """Training stage `multicondition_ce`: the teacher's recipe on the noisy labelled data
    (clean alignments), the fair comparison without distillation. Off unless
    baselines.multicondition is set."""
    if not config.baselines.multicondition:
        return {"skipped": "baselines.multicondition is false"}
    records = acoustic.read(workdir, layout.noisy(layout.TRAIN_LABELLED))
    return train_frame_ce(config, config.teacher, workdir, "multicondition_ce", records)


def run(config, workdir: pathlib.Path) -> dict:
    """Training stage `teacher_ce`."""
    records = acoustic.read(workdir, layout.clean(layout.TRAIN_LABELLED))
    return train_frame_ce(config, config.teacher, workdir, "teacher_ce", records)
