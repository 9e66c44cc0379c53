"""On-the-fly noisify (student.noisify='onthefly'): the host draws recipes, the device mixes.

The device mix is checked against data_prep.noisify.render (the offline copies' float64
reference) on the same recipes, for frame alignment with the clean audio, and the host's
batches for determinism per (seed, epoch) and exact resumption; then the tiny recipe trains
and decodes a student on fresh mixes.
"""

import math
import shutil

import jax
import numpy as np
import pytest
import soundfile

from data_prep import noisify
from data_prep import rir
from tsasr.audio import device_mix
from tsasr.data import batching
from tsasr.data import loader as loader_lib
from tsasr.data import records
from tsasr.data import manifest
from tsasr.recipes.asr import config as asr_config
from tsasr.recipes.asr import onthefly, student
from tsasr.recipes.asr import teacher

from conftest import run_asr, tiny_config
from test_noisify import _lag  # GCC-PHAT lag, as the stored copies' alignment is measured

RATE = 16000


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """Noise files, clean utterances of several lengths (white, speech-like levels) and their draws."""
    directory = tmp_path_factory.mktemp("onthefly")
    rng = np.random.default_rng(0)
    noises = []
    for i, kind in enumerate(("music", "tv", "stationary", "music")):
        seconds = (6.0, 2.0, 4.0, 5.0)[i]  # the 2 s clip is looped for longer utterances
        path = directory / f"noise{i}.wav"
        tone = np.sin(2 * np.pi * (150 + 90 * i) * np.arange(int(seconds * RATE)) / RATE)
        soundfile.write(path, (0.2 * tone + 0.05 * rng.standard_normal(tone.size)).astype(np.float32), RATE, "PCM_16")
        noises.append({"id": f"n{i}", "audio": str(path), "duration": seconds, "kind": kind})
    config = asr_config.base_config()
    draws = onthefly.MixDraws(noises, config.noisify.to_dict(), seed=3)
    audio, conditions = {}, {}
    for i, seconds in enumerate((1.3, 2.0, 2.55, 0.9, 1.7, 2.2, 1.1, 2.4)):
        utt = f"u{i}"
        level = 0.9 if i == 2 else 0.05  # u2 is loud: its mix clips and render scales it down
        samples = np.clip(rng.standard_normal(int(seconds * RATE)) * level, -1, 1)
        audio[utt] = np.round(samples * 32767).astype(np.int16)
        conditions[utt] = "train_labelled" if i % 2 else "train_unlabelled"
    records = [{"id": u} for u in audio]
    examples = onthefly.onthefly_examples(records, audio)
    batching_config = batching.BatchingConfig(
        batch_size=4, bucket_boundaries=(256,), seed=5, keys=onthefly.ONTHEFLY_KEYS
    )
    batches = onthefly.OnTheFlyBatches(examples, audio, conditions, draws, batching_config)
    return batches, draws, audio, conditions


_MIX = jax.jit(device_mix.reverberant_mix)


def _device_mixes(batch):
    return np.asarray(_MIX(*(batch[k] for k in device_mix.BATCH_KEYS)))


def test_device_mix_equals_the_host_render(setting):
    batches, draws, audio, conditions = setting
    checked = clipped = 0
    for epoch in (0, 1):
        for length, indices in batches.batcher.plan(epoch):
            batch = batches.local_batch(epoch, length, indices)
            mixes = _device_mixes(batch)
            for row, index in enumerate(indices):
                utt = batches.batcher.examples[index]["id"]
                samples = audio[utt]
                recipe = draws.recipe(utt, conditions[utt], len(samples), f"epoch{epoch}")
                reference, applied = noisify.render(recipe, samples.astype(np.float32) / 32768.0)
                got = mixes[row]
                assert batch["delays"][row] == applied["delay_samples"]
                scale = np.max(np.abs(reference))
                np.testing.assert_allclose(got[: len(samples)], reference, rtol=0, atol=2e-6 * scale / 0.95 + 1e-7)
                assert not got[len(samples) :].any()  # padding stays silent
                clipped += applied["output_scale"] < 1.0
                checked += 1
    assert checked == 16 and clipped >= 1  # both epochs of every utterance; the clip scaling was exercised


def test_device_mix_keeps_noisy_frames_aligned_with_clean(setting):
    _, draws, _, _ = setting
    rng = np.random.default_rng(7)
    lags, delays = [], []
    for i in range(8):
        samples = 24000
        probe = (rng.standard_normal(samples) * 0.1).astype(np.float32)
        recipe = dict(draws.recipe(f"p{i}", "train_labelled", samples, "probe"), snr_db=30.0)
        row = draws.ingredients(recipe, samples, samples)
        batch = {k: np.asarray(v)[None] for k, v in row.items()}
        batch["audio"], batch["audio_lengths"] = probe[None], np.array([samples], np.int32)
        noisy = _device_mixes(batch)[0]
        delays.append(int(row["delays"]))
        lags.append(_lag(noisy.astype(np.float64), probe.astype(np.float64)))
    assert min(delays) > 16  # without the advance the mix would lag by more than 1 ms
    assert max(abs(x) for x in lags) <= 16, lags  # 1 ms at 16 kHz


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_batches_are_a_function_of_seed_and_epoch_and_resume_exactly(setting):
    batches, draws, audio, conditions = setting
    per_epoch = batches.batches_per_epoch
    assert per_epoch == 2
    first = list(batches.epoch(0))
    again = onthefly.OnTheFlyBatches(
        batches.batcher.examples, audio, conditions, draws, batches.batcher.config
    )  # a fresh process: nothing cached decides the draws
    assert all(_same(a, b) for a, b in zip(first, again.epoch(0), strict=True))
    stream = batches(0)
    uninterrupted = [next(stream) for _ in range(3 * per_epoch)]
    stream.close()
    resumed = again(per_epoch + 1)
    assert all(_same(next(resumed), b) for b in uninterrupted[per_epoch + 1 :])
    resumed.close()
    # Epoch 1 hears each utterance in a new mix: other noises, room and SNR.
    second = list(batches.epoch(1))
    by_id = lambda epoch_batches: {  # noqa: E731
        u: (b["snr_db"][r], b["rirs"][r]) for b in epoch_batches for r, u in enumerate(b["ids"])
    }
    a, b = by_id(first), by_id(second)
    assert set(a) == set(b) == set(audio)
    for utt in audio:
        assert a[utt][0] != b[utt][0] and not np.array_equal(a[utt][1], b[utt][1])


def test_batch_arrays_reach_the_cpu_device_without_a_copy(setting):
    """The mixes' large arrays start on 64-byte boundaries: XLA:CPU takes them as device buffers
    as they are (a misaligned 512-frame batch's noises cost ~6 ms of copying a step)."""
    batch = next(setting[0].epoch(0))
    for key in ("audio", "noises", "rirs"):
        assert batch[key].ctypes.data % 64 == 0, key
    if jax.default_backend() == "cpu":
        assert jax.device_put(batch["noises"]).unsafe_buffer_pointer() == batch["noises"].ctypes.data


def test_hard_labels_ride_along_frame_for_frame(setting):
    batches, draws, audio, conditions = setting
    examples = [dict(e) for e in batches.batcher.examples]
    for i, example in enumerate(examples):
        example["senones"] = np.arange(len(example["features"]), dtype=np.int32) + 1000 * i
    labelled = onthefly.OnTheFlyBatches(examples, audio, conditions, draws, batches.batcher.config)
    for batch in labelled.epoch(0):
        for row, utt in enumerate(batch["ids"]):
            example = examples[int(utt[1:])]
            frames = len(example["features"])
            assert np.array_equal(batch["senones"][row, :frames], example["senones"])
            assert not batch["feature_paddings"][row, :frames].any() and batch["feature_paddings"][row, frames:].all()
            assert batch["audio_lengths"][row] == len(audio[utt])


def test_streamed_records_get_the_mixes_of_the_in_memory_path(setting, tmp_path):
    """student.input='stream': the same utterance in the same epoch gets the same audio and mix
    ingredients from ArrayRecord shards as from host memory, whichever batch it lands in."""
    batches, draws, audio, conditions = setting
    examples = ({"id": u, "audio": a} for u, a in audio.items())
    records.write_split(tmp_path, examples, num_shards=2)
    loader_config = loader_lib.LoaderConfig(batch_size=2, bucket_boundaries=(256,), seed=5)
    streamed = onthefly.StreamedMixes(loader_lib.Loader(tmp_path, loader_config), draws, conditions)
    rows = lambda epoch_batches: {  # noqa: E731
        str(u): {k: b[k][r] for k in device_mix.BATCH_KEYS} for b in epoch_batches for r, u in enumerate(b["ids"])
    }
    for epoch in (0, 1):
        memory, stream = rows(batches.epoch(epoch)), rows(streamed.epoch(epoch))
        assert stream and set(stream) <= set(memory)
        for utt, row in stream.items():
            for key in device_mix.BATCH_KEYS:
                assert np.array_equal(row[key], memory[utt][key]), (utt, key)
    resumed = streamed(streamed.batches_per_epoch + 1)  # a resumed run: epoch 1's draws from its second batch on
    assert _same(next(resumed), list(streamed.epoch(1))[1])
    resumed.close()


def test_rir_taps_hold_every_simulated_room():
    """Truncating the RIRs to rir_taps would change the mix: no room of the config's ranges needs it."""
    cfg = asr_config.base_config().noisify.to_dict()
    taps = onthefly.rir_taps(cfg)
    rng = np.random.default_rng(1)
    longest = 0
    for _ in range(300):
        room = rir.draw_room(rng, cfg["rooms"], 3)
        room["rt60"] = cfg["rooms"]["rt60"][1] if longest == 0 else room["rt60"]  # the longest decay once
        longest = max(longest, rir.impulse_responses(room, cfg["max_order"]).shape[1])
    assert 0.5 * taps < longest <= taps


def test_onthefly_needs_the_online_teacher(tmp_path):
    with pytest.raises(ValueError, match="student.noisify='onthefly' needs student.online=True"):
        student.run(tiny_config(**{"student.noisify": "onthefly"}), tmp_path)
    with pytest.raises(ValueError, match="student.noisify='fresh', expected one of"):
        student.run(tiny_config(**{"student.noisify": "fresh"}), tmp_path)


ONTHEFLY = {"student.online": True, "student.noisify": "onthefly"}


@pytest.fixture(scope="module")
def onthefly_run(tiny_run, tmp_path_factory):
    """(workdir, report) of the tiny recipe up to the on-the-fly student's decoding."""
    shared, config = tiny_run
    run_asr(config, shared, until="decode_teacher_seq")  # the shared run's stages (test_recipe.py reuses them)
    workdir = tmp_path_factory.mktemp("onthefly_run") / "run"
    shutil.copytree(shared, workdir, ignore=shutil.ignore_patterns("student_*", "labels*", "superseded"))
    # the shared run's decoding config: its copied teacher decodes stay up to date
    return workdir, run_asr(tiny_config(**ONTHEFLY), workdir, until="decode_student_ce")


def test_tiny_onthefly_student_trains_and_decodes(onthefly_run):
    workdir, report = onthefly_run
    summary = report["student_ce"]["summary"]
    assert summary["noisify"] == "onthefly" and summary["online"]
    assert not (workdir / "labels").exists()
    # the clean training utterances themselves, each heard in new mixes (not the stored copies' ids)
    clean = [
        r["id"]
        for split in ("train_labelled", "train_unlabelled")
        for r in manifest.read_manifest(workdir / "corpus" / f"{split}.jsonl")
    ]
    assert summary["utterances"] == sum(not teacher.heldout(u, 5) for u in clean)
    assert summary["heldout_loss"] < 0.9 * math.log(summary["num_senones"])
    assert set(report["decode_student_ce"]["summary"]["wer"]) == {"clean", "noisy", "rerecorded"}


def test_tiny_onthefly_student_streams_its_clean_audio_from_records(onthefly_run, tmp_path):
    done, memory_report = onthefly_run
    workdir = tmp_path / "run"
    shutil.copytree(done, workdir, ignore=shutil.ignore_patterns("student_*", "superseded"))
    for marker in (workdir / ".stages").glob("*student*"):
        marker.unlink()
    report = run_asr(tiny_config(**ONTHEFLY, **{"student.input": "stream"}), workdir, until="decode_student_ce")
    summary = report["student_ce"]["summary"]
    index = records.read_index(workdir / "student_ce" / "records")
    assert summary["utterances"] == index["records"] == memory_report["student_ce"]["summary"]["utterances"]
    assert summary["heldout_loss"] < 0.9 * math.log(summary["num_senones"])
    assert set(report["decode_student_ce"]["summary"]["wer"]) == {"clean", "noisy", "rerecorded"}
