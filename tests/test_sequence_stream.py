"""sequence.input='stream' and the in-memory share (#16): teacher_seq trained from ArrayRecord
shards (audio, senones, phones) with LFBE in the step and each batch's numerators built from its
own rows' alignments, resumed without rewriting its records; the per-batch numerators are the
by-id table's; and with input='memory' each process computes the features of its own rows only.

Reuses the session's tiny run (its teacher_seq is the in-memory reference; test_recipe.py has
usually trained it already) and copies only what the stage reads."""

import dataclasses
import itertools
import json
import shutil

import numpy as np
import pytest
from conftest import run_asr, tiny_config

from tsasr.data import layout
from tsasr.data import loader as loader_lib
from tsasr.data import records
from tsasr.hmm import den_graph
from tsasr.hmm import tree as tree_lib
from tsasr.losses import fsa as fsa_lib
from tsasr.recipes.asr import acoustic
from tsasr.recipes.asr import sequence
from tsasr.recipes.asr import teacher

# Checkpoints at 3 and 6 (of --tiny's 6 steps), so a run stopped after step 3 resumes there.
STREAM = {"sequence.input": "stream", "sequence.train.checkpoint_every": 3}


class Stopped(Exception):
    pass


@pytest.fixture(scope="module")
def runs(tiny_run, tmp_path_factory):
    """(memory workdir, stream workdir, stream summary, mtimes of its records before the resume)."""
    memory, config = tiny_run
    run_asr(config, memory, until="teacher_seq")
    stream = tmp_path_factory.mktemp("sequence_stream") / "run"
    for part in ("corpus", "align", "teacher_ce"):  # all teacher_seq reads
        shutil.copytree(memory / part, stream / part)
    train = sequence.loop.train

    def stopped_after_step_3(*args, **kwargs):
        def after_step(step):
            if step == 2:
                raise Stopped

        return train(*args, after_step=after_step, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sequence.loop, "train", stopped_after_step_3)
        with pytest.raises(Stopped):
            sequence.run_teacher(tiny_config(**STREAM), stream)
    directory = stream / "teacher_seq" / "records"
    written = {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}
    summary = sequence.run_teacher(tiny_config(**STREAM), stream)
    return memory, stream, summary, written


def _dev_rows(directory):
    """The held-out evaluations' lines of a stage's metrics.jsonl."""
    rows = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "dev_loss" in r]


def _alignments(workdir):
    return {part: np.load(workdir / "align" / f"{part}.npz") for part in ("senones", "phones")}


def _denominator_lm(workdir, cfg):
    """(states_of, phone LM) of the stage's denominator, as train_sequence builds them."""
    alignments = _alignments(workdir)
    tree = tree_lib.SenoneTree.from_json((workdir / "align" / "tree.json").read_text())
    states_of = den_graph.senone_states(tree)
    clean = acoustic.read(workdir, layout.clean(layout.TRAIN_LABELLED))
    ids = sorted(r["id"] for r in clean if r["id"] in alignments["senones"].files)
    lm, _ = sequence.denominator(ids, alignments["senones"], alignments["phones"], tree, cfg, states_of)
    return states_of, lm


def test_streamed_teacher_seq_trains_from_the_ce_model_as_the_in_memory_one(runs):
    memory, stream, summary, written = runs
    expected = json.loads((memory / ".stages" / "teacher_seq.json").read_text())["summary"]
    assert (summary["utterances"], summary["heldout_utterances"]) == (
        expected["utterances"],
        expected["heldout_utterances"],
    )
    index = records.read_index(stream / "teacher_seq" / "records")
    assert index["records"] == summary["utterances"] and {"senones", "phones"} <= set(index["keys"])
    # The held-out set is in memory both ways: the CE model's held-out LF-MMI loss is the same.
    first, last = summary["heldout_loss_first_last"]
    assert first == pytest.approx(expected["heldout_loss_first_last"][0], rel=1e-3)
    # The regulariser's frozen CE model runs in the streamed step too (LFBE of the audio in the
    # step, then both forward passes): its held-out term at step 0 is the in-memory run's.
    dev = [_dev_rows(directory)[0] for directory in (stream / "teacher_seq", memory / "teacher_seq")]
    assert dev[0]["step"] == dev[1]["step"] == 0 and dev[0]["dev_kl_loss"] > 0
    assert dev[0]["dev_kl_loss"] == pytest.approx(dev[1]["dev_kl_loss"], rel=1e-3)
    rows = [json.loads(line) for line in (stream / "teacher_seq" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["kl_loss"] > 0 and r["lfmmi_loss"] > 0 for r in rows if "loss" in r)
    # The training loss of the first steps is the CE model's on the streamed batches: LFBE in
    # the step and each row's numerator from the row's own alignment. Measured: 0.057 streamed,
    # 0.055 in memory (other batches); the same batches with every row's alignment rolled to the
    # next row or shifted by 3 or 10 frames: 0.32, or 0.0 (no numerator path: every row skipped).
    ratio = summary["loss_first_last"][0] / expected["loss_first_last"][0]
    assert 0.7 < ratio < 1.4, (summary, expected)
    # Resumed after step 3 without writing its records again.
    directory = stream / "teacher_seq" / "records"
    assert {p.name: p.stat().st_mtime_ns for p in directory.iterdir()} == written
    steps = [json.loads(line)["step"] for line in (stream / "teacher_seq" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 3, 6, 6], steps  # dev at 0, training lines at 3 and 6, dev at 6: nothing redone


def test_per_batch_numerators_are_the_tables(runs):
    """Numerators built from a streamed batch's rows equal those looked up by utterance id."""
    _, stream, _, _ = runs
    cfg = tiny_config(**STREAM).sequence
    states_of, lm = _denominator_lm(stream, cfg)
    alignments = _alignments(stream)
    config = loader_lib.LoaderConfig(batch_size=cfg.batch_size, bucket_boundaries=tuple(cfg.bucket_boundaries))
    batch = next(loader_lib.Loader(stream / "teacher_seq" / "records", config)(0))
    ids = [str(u) for u in batch["ids"]]
    table = sequence.numerators(ids, alignments["senones"], alignments["phones"], cfg.tolerance, states_of, lm)
    got = next(sequence.with_numerators([batch], cfg.tolerance, states_of, lm))
    length = got["feature_paddings"].shape[1]
    fsa, allowed = fsa_lib.stack_numerators(
        [table[u] for u in ids], length, num_states=length + 1, num_arcs=2 * length + 2
    )
    assert "phones" not in got  # the step reads only the numerators
    for name in sequence.NUM_FIELDS:
        np.testing.assert_array_equal(got[f"num_{name}"], getattr(fsa, name), err_msg=name)
    np.testing.assert_array_equal(got["num_allowed"], allowed)
    assert np.all(np.isfinite(got["num_start"][:, 0]))  # every row's phone sequence is in the LM


@pytest.mark.parametrize("process_count", [1, 2])
def test_in_memory_features_are_only_those_of_the_process_rows(runs, monkeypatch, process_count):
    """With input='memory', process p of P hands acoustic.compute_features its rows of the run's
    steps, the held-out utterances and those in nobody's rows, never another process's rows; one
    process hands it every utterance in the manifest's order, as before the share."""
    memory, _, _, _ = runs
    config = tiny_config()
    cfg = config.sequence
    alignments = _alignments(memory)
    aligned = [
        r for r in acoustic.read(memory, layout.clean(layout.TRAIN_LABELLED)) if r["id"] in alignments["senones"].files
    ]
    key = {r["id"]: r["id"] for r in aligned}
    held = {u for u in key if teacher.heldout(u, cfg.heldout_percent)}
    computed = []

    def fake_features(utterances, desc=""):
        computed.extend(r["id"] for r in utterances)
        return {r["id"]: np.ones((len(alignments["senones"][r["id"]]), 64), np.float32) for r in utterances}

    monkeypatch.setattr(acoustic, "compute_features", fake_features)
    norm = {"mean": [0.0] * 64, "std": [1.0] * 64}
    batching_config = dataclasses.replace(teacher.batching_config(config, cfg), keys=sequence.BATCH_KEYS)
    one_epoch = lambda batches_per_epoch: batches_per_epoch  # noqa: E731
    rows = {}
    for p in range(process_count):
        computed.clear()
        batcher, heldout, steps = sequence.in_memory(
            aligned, held, key, alignments, norm, batching_config, one_epoch, "teacher_seq", p, process_count
        )
        local = batcher.local_batch_size
        batches = list(itertools.islice(batcher(0), steps))  # as train_sequence takes them
        rows[p] = {u for b in batches for u in b["ids"][p * local : (p + 1) * local]}
        everyone = {u for b in batches for u in b["ids"]}
        nobody = set(key) - held - everyone
        assert set(computed) == rows[p] | nobody | held and len(computed) == len(set(computed))
        assert all(b["features"].shape[2] == 64 for b in batches)  # its rows are computed ones
        assert [e["id"] for e in heldout] == sorted(held)
        if process_count == 1:
            assert computed == [r["id"] for r in aligned]
        else:
            assert len(set(computed) - held) < len(key) - len(held)
    if process_count == 2:
        assert not rows[0] & rows[1] and len(rows[0]) == len(rows[1]) > 0


def test_an_unknown_input_is_refused(tmp_path):
    with pytest.raises(ValueError, match="sequence.input='disk', expected one of"):
        sequence.train_sequence(tiny_config(**{"sequence.input": "disk"}), tmp_path, "teacher_seq", "teacher_ce", [])
