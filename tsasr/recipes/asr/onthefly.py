"""On-the-fly noisify for the student stage (student.noisify='onthefly', with student.online).

Every epoch the student hears a fresh mix of every clean utterance: the host draws the mix per
(seed, epoch, utterance id) with data_prep.noisify.draw_recipe (1-3 noise segments, a new
simulated room, a new SNR; its RIRs computed here, ~0.5 ms a room, so no bank of rooms is
kept) and the device makes it inside the step (tsasr.audio.device_mix), where the online
teacher labels the clean audio of the same batch. Nothing noisy and no labels are stored. The
student's normalisation comes from the epoch-0 mixes; its held-out set is one fixed draw of the
held-out utterances. The clean audio is held in host memory (int16), or with
student.input='stream' written once as ArrayRecord shards (WORKDIR/<stage>/records/) and read
by tsasr.data.loader, host memory O(batch) (the held-out utterances stay in memory).
"""

from __future__ import annotations

import logging
import pathlib

import jax
import numpy as np

from data_prep import noise as noise_corpus
from data_prep import noisify as noisify_lib
from data_prep import rir as rir_lib
from data_prep import rirs_noises
from tsasr.audio import device_mix
from tsasr.audio import io as audio_io
from tsasr.audio import lfbe as lfbe_lib
from tsasr.data import batching
from tsasr.data import layout
from tsasr.data import loader as loader_lib
from tsasr.data import records as records_lib
from tsasr.recipes.asr import acoustic
from tsasr.recipes.asr import student
from tsasr.recipes.asr import teacher as teacher_stage

log = logging.getLogger(__name__)


ONTHEFLY_KEYS = {"features": batching.FRAME, "senones": batching.FRAME, "index": batching.CLIP}
_WINDOW, _SHIFT = lfbe_lib.LfbeConfig().window_size, lfbe_lib.LfbeConfig().window_shift


def aligned_zeros(shape: tuple, dtype) -> np.ndarray:
    """np.zeros starting on a 64-byte boundary. XLA:CPU takes such an array as the device buffer
    itself (jax.device_put, jax.make_array_from_process_local_data); a misaligned one, as numpy
    allocates large arrays, is copied: ~6 ms of CPU a step for the mixes' noises of a 512-frame batch."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    raw = np.zeros(size + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start : start + size].view(dtype).reshape(shape)


def rir_taps(noisify_cfg) -> int:
    """The static RIR length of on-the-fly mixes: simulated rooms' responses end 60 dB below
    their direct sound, before rt60 seconds (data_prep.rir; tests/test_onthefly_noisify.py
    checks the config's ranges), so rt60_max plus the early part's bound fits them; measured
    responses (noisify.rirs_dir) are cut at 1 s."""
    if noisify_cfg["rirs_dir"]:
        return noisify_lib.RATE
    return -(-(int(noisify_cfg["rooms"]["rt60"][1] * noisify_lib.RATE) + 1024) // 512) * 512


class MixDraws:
    """The host's half of on-the-fly noisify: per (utterance, salt) a recipe drawn as the
    noisify stage draws one (data_prep.noisify.draw_recipe, its rng salted by the epoch), its
    noise segments cut and its RIRs computed, as padded arrays for device_mix.reverberant_mix."""

    def __init__(self, noises: list[dict], noisify_cfg: dict, seed: int, rooms: dict | None = None):
        self.noises, self.cfg, self.seed, self.rooms = noises, noisify_cfg, int(seed), rooms
        self.max_noises = int(noisify_cfg["num_noises"][1])
        self.taps = rir_taps(noisify_cfg)

    def recipe(self, utt_id: str, condition: str, samples: int, salt: str) -> dict:
        rng = noisify_lib.utterance_rng(self.seed, condition, f"{utt_id}/{salt}")
        clean = {"id": utt_id, "duration": samples / noisify_lib.RATE}
        return noisify_lib.draw_recipe(rng, clean, self.noises, self.cfg, condition, self.rooms)

    def ingredients(self, recipe: dict, samples: int, width: int) -> dict:
        """One row's `noises` [max_noises, width], `rirs` [1 + max_noises, taps] (a noise's gain on
        its response, as render applies it), `delays` and `snr_db`."""
        if "measured_room" in recipe:
            rirs = rir_lib.measured_impulse_responses(recipe["measured_room"]["rirs"])
        else:
            rirs = rir_lib.impulse_responses(recipe["room"], recipe["max_order"])
        noises = np.zeros((self.max_noises, width), np.float32)
        responses = np.zeros((1 + self.max_noises, self.taps), np.float32)
        taps = min(rirs.shape[1], self.taps)
        responses[0, :taps] = rirs[0, :taps]
        for row, spec in enumerate(recipe["noises"]):
            segment = noisify_lib._segment(spec["audio"], spec["offset"], samples)
            noises[row, :samples] = segment
            gain = 10 ** (spec["level_db"] / 20) / (np.sqrt(np.mean(segment**2)) + 1e-12)
            responses[1 + row, :taps] = rirs[1 + row, :taps] * gain
        return {
            "noises": noises,
            "rirs": responses,
            "delays": np.int32(np.argmax(np.abs(rirs[0]))),
            "snr_db": np.float32(recipe["snr_db"]),
        }

    def add_mixes(self, batch: dict, utts: list[str], conditions: dict[str, str], salt: str) -> dict:
        """`batch` (its `audio` [rows, width] and `audio_lengths`) with every row's ingredients (BATCH_KEYS
        of device_mix) for the utterance `utts[row]` ('' for a filler row: no noise, no response)."""
        rows, width = batch["audio"].shape
        out = {
            "noises": aligned_zeros((rows, self.max_noises, width), np.float32),
            "rirs": aligned_zeros((rows, 1 + self.max_noises, self.taps), np.float32),
            "delays": np.zeros(rows, np.int32),
            "snr_db": np.zeros(rows, np.float32),
        }
        for row, utt in enumerate(utts):
            if not utt:
                continue
            samples = int(batch["audio_lengths"][row])
            recipe = self.recipe(utt, conditions[utt], samples, salt)
            for key, value in self.ingredients(recipe, samples, width).items():
                out[key][row] = value
        return {**batch, **out}


class StreamedMixes:
    """A records Loader's batches (student.input='stream': clean audio from ArrayRecord shards,
    tsasr.data.loader) with the ingredients of each row's mix for the step's epoch, as
    OnTheFlyBatches draws them: the same (seed, epoch, utterance id) gives the same mix."""

    def __init__(self, loader: loader_lib.Loader, draws: MixDraws, conditions: dict[str, str]):
        self.loader, self.draws, self.conditions = loader, draws, conditions
        self.batches_per_epoch, self.index = loader.batches_per_epoch, loader.index

    def __call__(self, start_step: int = 0):
        """Endless host-local batches for global steps start_step, start_step + 1, ..."""
        for step, batch in enumerate(self.loader(start_step), start_step):
            epoch = step // self.batches_per_epoch
            yield self.draws.add_mixes(batch, [str(u) for u in batch["ids"]], self.conditions, f"epoch{epoch}")

    def epoch(self, epoch: int = 0):
        """The batches of one epoch."""
        batches = self(epoch * self.batches_per_epoch)
        try:
            for _ in range(self.batches_per_epoch):
                yield next(batches)
        finally:
            batches.close()


class OnTheFlyBatches:
    """Batches of clean audio with the ingredients of a fresh mix per utterance and epoch.

    The plan (which utterances go together) is tsasr.data.batching.Batcher's over the
    utterances' frame counts; the draws are a function of (seed, epoch, utterance id), so a
    run resumed at step s gets the batches of an uninterrupted run bit for bit. `salt` fixes
    the draws instead (the held-out set: one mix per utterance, the same at every evaluation).
    A batch: `audio` int16 [rows, samples] (samples: loader.audio_width of the bucket),
    `audio_lengths`, device_mix's `noises`, `rirs`, `delays`, `snr_db`, `feature_paddings`
    [rows, bucket] (and `senones` with hard labels).
    """

    def __init__(
        self,
        examples: list[dict],
        audio: dict[str, np.ndarray],
        conditions: dict[str, str],
        draws: MixDraws,
        config: batching.BatchingConfig,
        process_index: int = 0,
        process_count: int = 1,
        salt: str = "",
    ):
        self.batcher = batching.Batcher(examples, config, process_index, process_count)
        self.audio, self.conditions, self.draws, self.salt = audio, conditions, draws, salt
        self.batches_per_epoch = self.batcher.batches_per_epoch
        self.index = {"records": len(examples), "frames": int(self.batcher.lengths.sum())}

    def local_batch(self, epoch: int, length: int, indices: np.ndarray) -> dict:
        batch = self.batcher.local_batch(length, indices)
        del batch["features"]  # [rows, frames, 0]: the utterances' frame counts planned the batches
        rows, width = len(batch["index"]), loader_lib.audio_width(length, _WINDOW, _SHIFT)
        batch["audio"] = aligned_zeros((rows, width), np.int16)
        batch["audio_lengths"] = np.zeros(rows, np.int32)
        utts = []
        for row in range(rows):
            if batch["feature_paddings"][row, 0] == 1.0:  # a filler row: silence, every frame padding
                utts.append("")
                continue
            utts.append(self.batcher.examples[int(batch["index"][row])]["id"])
            samples = self.audio[utts[-1]]
            batch["audio"][row, : len(samples)], batch["audio_lengths"][row] = samples, len(samples)
        del batch["index"]
        return self.draws.add_mixes(batch, utts, self.conditions, self.salt or f"epoch{epoch}")

    def __call__(self, start_step: int = 0):
        """Endless host-local batches for global steps start_step, start_step + 1, ..."""
        step = start_step
        while True:
            epoch, position = divmod(step, self.batches_per_epoch)
            for length, indices in self.batcher.plan(epoch)[position:]:
                yield self.local_batch(epoch, length, indices)
            step = (epoch + 1) * self.batches_per_epoch

    def epoch(self, epoch: int = 0):
        """One pass (the held-out set's batches with drop_remainder=False)."""
        for length, indices in self.batcher.plan(epoch):
            yield self.local_batch(epoch, length, indices)


def onthefly_examples(records: list[dict], audio: dict[str, np.ndarray]) -> list[dict]:
    """Batcher examples that plan on-the-fly batches: frame counts (`features` [frames, 0]) and
    the row's position (`index`)."""
    return [
        {"id": r["id"], "features": np.zeros((lfbe_lib.num_frames(len(audio[r["id"]])), 0), np.float32), "index": i}
        for i, r in enumerate(records)
    ]


def onthefly_norm(batches, cfg) -> dict:
    """The student's normalisation from one pass of mixes (epoch 0's batches), LFBE on the device."""
    utterance_mean = bool(cfg.utterance_mean)
    norm = {"mean": np.zeros(1), "std": np.ones(1), "utterance_mean": bool(utterance_mean)}
    compute = jax.jit(lambda batch: device_mix.features_of_mix(batch, norm, None))
    stats = lfbe_lib.MeanVarStats(lfbe_lib.LfbeConfig().num_bins)
    for batch in batches.epoch(0):
        features, paddings = compute({k: batch[k] for k in device_mix.BATCH_KEYS})
        stats.add(np.asarray(features["features"]), np.asarray(paddings))
    mean, std = stats.finalize()
    return {"mean": mean.tolist(), "std": std.tolist(), "utterance_mean": bool(utterance_mean)}


def _pcm16(record: dict) -> np.ndarray:
    return records_lib.to_pcm16(audio_io.read_audio(record["audio"]))


def onthefly_training_set(
    config, cfg, workdir: pathlib.Path, name: str, num_senones: int, clean_norm: dict, alignments=None
):
    """The student's TrainingSet with on-the-fly mixes of the clean training utterances, their audio
    in host memory, or (student.input='stream') streamed from ArrayRecord shards written once to
    WORKDIR/<name>/records/ (the held-out utterances stay in memory)."""
    records, conditions = [], {}
    for split, relative in zip(layout.TRAIN_SPLITS, student.CLEAN_SPLITS):
        for r in acoustic.read(workdir, relative):
            if int(r.get("sample_rate", noisify_lib.RATE)) < noisify_lib.RATE:
                raise ValueError(
                    f"student.noisify='onthefly': {r['id']!r} was recorded at {r['sample_rate']} Hz; on-the-fly "
                    "mixes are not band-limited (use student.noisify='stored')"
                )
            records.append(r)
            conditions[r["id"]] = split
    nz = config.noisify
    rooms = None
    if nz.rirs_dir:
        rooms = rirs_noises.split_rooms(nz.rirs_dir, tuple(nz.rirs_subsets), nz.rirs_test_percent)["train"]
    draws = MixDraws(noise_corpus.read_noise(workdir / "noise" / "train.jsonl"), nz.to_dict(), config.seed, rooms)
    train = [r for r in records if not teacher_stage.heldout(r["id"], cfg.heldout_percent)]
    held = [r for r in records if teacher_stage.heldout(r["id"], cfg.heldout_percent)]
    streamed = cfg.input == "stream"
    audio = {r["id"]: _pcm16(r) for r in (held if streamed else records)}
    held_examples = onthefly_examples(held, audio)
    examples = [] if streamed else onthefly_examples(train, audio)
    extra = {}
    if alignments is not None:
        student.add_hard_labels(held_examples, held, alignments)
        if not streamed:
            extra["hard_labelled_utterances"] = student.add_hard_labels(examples, train, alignments)
        else:
            extra["hard_labelled_utterances"] = sum(r["id"] in alignments.files for r in train)
    options = dict(batch_size=cfg.batch_size, bucket_boundaries=tuple(cfg.bucket_boundaries), keys=ONTHEFLY_KEYS)
    process = (jax.process_index(), jax.process_count())
    every = batching.BatchingConfig(seed=int(config.seed), drop_remainder=False, **options)
    # Every process computes the normalisation from every utterance, as the stored path does.
    if streamed:
        directory = workdir / name / "records"
        write = lambda: write_clean_records(directory, train, alignments, cfg.record_shards)  # noqa: E731
        loader = teacher_stage.records_loader(config, cfg, name, directory, write)
        loader_config = loader.config
        stream = StreamedMixes(loader, draws, conditions)
        # (the loader's full batches of epoch 0: a bucket's remainder is left out of the statistics)
        norm = onthefly_norm(StreamedMixes(loader_lib.Loader(directory, loader_config), draws, conditions), cfg)
    else:
        stream = OnTheFlyBatches(
            examples, audio, conditions, draws, batching.BatchingConfig(seed=int(config.seed), **options), *process
        )
        norm = onthefly_norm(OnTheFlyBatches(examples, audio, conditions, draws, every), cfg)
    dev = None
    if held_examples:
        dev = OnTheFlyBatches(held_examples, audio, conditions, draws, every, *process, salt="heldout")
    data = teacher_stage.TrainingSet(
        [],
        [],
        norm,
        num_senones,
        stream=stream,
        dev=dev,
        on_device=lambda loss: device_mix.on_mix(loss, norm, clean_norm),
    )
    return data, extra


def write_clean_records(directory: pathlib.Path, train: list[dict], alignments, num_shards: int) -> None:
    """The clean training utterances (with their alignments, -1 where none, for hard labels) as
    `num_shards` ArrayRecord shards in `directory`, unless a complete split of as many utterances
    and shards is there (a resumed run)."""

    def examples():
        for r in train:
            audio = audio_io.read_audio(r["audio"])
            example = {"id": r["id"], records_lib.AUDIO: audio}
            if alignments is not None:
                aligned = r["id"] in alignments.files
                frames = lfbe_lib.num_frames(len(audio))
                example["senones"] = (
                    np.asarray(alignments[r["id"]], np.int32) if aligned else np.full(frames, -1, np.int32)
                )
            yield example

    records_lib.write_split_once(directory, examples, len(train), num_shards)


def run(config, cfg, workdir: pathlib.Path, name: str, teacher_name: str) -> dict:
    """The student stage (student.run) with student.noisify='onthefly': fresh mixes every epoch,
    the online teacher on the clean audio."""
    teacher_model, frozen, teacher_norm = acoustic.load_system(workdir, teacher_name)
    num_senones, top_k, teacher = student.online_teacher(cfg, teacher_model)
    alignments = student.hard_alignments(workdir, cfg, num_senones) if cfg.hard_weight else None
    data, summary_extra = onthefly_training_set(config, cfg, workdir, name, num_senones, teacher_norm, alignments)
    if alignments is not None:
        student.log_hard_labels(name, cfg, summary_extra["hard_labelled_utterances"], data.stream.index["records"])
    summary_extra["noisify"] = "onthefly"
    return student.train_student(config, cfg, workdir, name, data, top_k, teacher, frozen, teacher_name, summary_extra)
