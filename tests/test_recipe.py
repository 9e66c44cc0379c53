"""The asr recipe end to end on the tiny corpus: alignments -> teacher CE -> teacher LF-MMI ->
soft labels -> student CE -> student LF-MMI, every system decoded and scored by its own
evaluation stage."""

import json
import math

import numpy as np
import pytest

from tsasr.data import layout
from tsasr.distill import soft_labels as sl
from tsasr.recipes.asr import acoustic

from conftest import run_asr


def training_rows(directory):
    """The training lines of a stage's metrics.jsonl (dev evaluations have lines of their own)."""
    rows = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r]


@pytest.fixture(scope="module")
def recipe(tiny_run):
    workdir, config = tiny_run
    report = run_asr(config, workdir, until="decode_student_seq")
    return workdir, config, report


def test_every_system_is_scored_on_every_condition(recipe):
    workdir, _, report = recipe
    results = json.loads((workdir / "results.json").read_text())
    for system in ("gmm", "teacher_ce", "teacher_seq", "student_ce", "student_ce_from_teacher_seq", "student_seq"):
        assert set(results["systems"][system]["wer"]) == {"clean", "noisy", "rerecorded"}, system
    assert set(results["relative_to_teacher"]["student_ce"]) == {"clean", "noisy", "rerecorded"}
    student = results["systems"]["student_ce"]
    assert set(student["ci"]["wer"]) == {"clean", "noisy", "rerecorded"}
    for condition, (low, high) in student["ci"]["wer"].items():
        assert low <= student["wer"][condition] <= high
    assert set(student["p_better_than"]["teacher_ce"]) == {"clean", "noisy", "rerecorded"}
    # Table 2 compares every student with both teachers: p(improves on each), paired bootstrap.
    for system in ("student_ce", "student_ce_from_teacher_seq", "student_seq"):
        p_better = results["systems"][system]["p_better_than"]
        assert set(p_better) == {"teacher_ce", "teacher_seq"}, system
        assert all(0.0 <= p <= 1.0 for p in p_better["teacher_seq"].values())
    assert set(results["systems"]["teacher_seq"]["p_better_than"]) == {"teacher_ce"}
    # the second student learnt the sequence-trained teacher's labels, from their own store
    assert report["label_teacher_seq"]["summary"]["teacher"] == "teacher_seq"
    assert report["student_ce_from_teacher_seq"]["summary"]["teacher"] == "teacher_seq"
    assert sl.SoftLabelReader(workdir / "labels_teacher_seq").k == sl.SoftLabelReader(workdir / "labels").k
    assert report["decode_student_ce"]["summary"]["wer"] == student["wer"]
    for condition in ("clean", "noisy"):
        hyps = json.loads((workdir / "decode" / "student_ce" / f"{condition}.json").read_text())
        assert len(hyps) == len(acoustic.read(workdir, layout.CONDITIONS[condition]))


def test_student_learns_the_soft_labels(recipe):
    workdir, config, report = recipe
    summary = report["student_ce"]["summary"]
    rows = training_rows(workdir / "student_ce")
    assert rows[-1]["loss"] < rows[0]["loss"]
    # An untrained (uniform) student scores log(num_senones) on any soft targets.
    assert summary["heldout_loss"] < 0.9 * math.log(summary["num_senones"])
    assert summary["top_k"] == config.student.top_k and summary["temperature"] == config.student.temperature


def test_soft_labels_cover_every_clean_training_utterance(recipe):
    workdir, config, _ = recipe
    reader = sl.SoftLabelReader(workdir / "labels")
    assert reader.k == config.student.label_top_k
    records = acoustic.read(workdir, "corpus/train_labelled.jsonl") + acoustic.read(
        workdir, "corpus/train_unlabelled.jsonl"
    )
    assert len(reader) == len(records)
    record = records[0]
    ids, probs = reader.targets(record["id"], 20, 2.0)
    frames = 1 + (int(round(record["duration"] * 16000)) - 400) // 160
    assert ids.shape == probs.shape == (frames, 20)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert np.all(np.diff(reader.raw(record["id"])[1], axis=1) <= 0)  # sorted by teacher logit


def test_rerun_skips_the_whole_recipe(recipe):
    workdir, config, _ = recipe
    report = run_asr(config, workdir, until="decode_student_seq")
    assert all(v["status"] == "skipped" for v in report.values())


def test_sequence_training_starts_from_ce_and_runs_lfmmi(recipe):
    workdir, config, report = recipe
    for name, init in (("teacher_seq", "teacher_ce"), ("student_seq", "student_ce")):
        summary = report[name]["summary"]
        assert summary["init"] == init and summary["den_states"] > 100
        rows = training_rows(workdir / name)
        assert rows and all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in rows)
        # Starting from the CE params (not from scratch): frame accuracy is far above chance.
        assert rows[0]["frame_accuracy"] > 10.0 / summary.get("num_senones", 250)
    results = json.loads((workdir / "results.json").read_text())
    # once it exists, the sequence-trained teacher is the reference of every relative change
    assert results["relative_to_teacher"]["teacher_seq"] == {c: 0.0 for c in ("clean", "noisy", "rerecorded")}


def test_baselines_are_off_unless_asked_for(recipe):
    workdir, config, _ = recipe
    report = run_asr(config, workdir, until="multicondition_seq")
    for name in ("multicondition_ce", "multicondition_seq"):
        assert report[name]["summary"] == {"skipped": "baselines.multicondition is false"}


def test_online_student_with_hard_labels(recipe, tmp_path):
    """student.online: no labels are stored, the teacher runs in the student's step; with
    hard_weight the labelled utterances' alignments join the targets."""
    import shutil

    from conftest import tiny_config

    workdir = tmp_path / "run"
    shutil.copytree(recipe[0], workdir)  # this test's student must not replace the shared one
    config = tiny_config(
        **{
            "student.online": True,
            "student.hard_weight": 0.3,
            "student.train.num_steps": 30,
            "decode.conditions": "('noisy',)",
            "decode.bootstrap_replications": 20,
        }
    )
    report = run_asr(config, workdir, until="decode_student_ce")
    assert report["label"]["summary"] == {
        "skipped": "student.online: the teacher labels inside the student's training step"
    }
    assert not (workdir / "labels").exists()
    summary = report["student_ce"]["summary"]
    assert summary["online"] and summary["hard_weight"] == 0.3
    labelled = acoustic.read(workdir, "noisy/train_labelled.jsonl")
    assert 0 < summary["hard_labelled_utterances"] <= len(labelled) < summary["utterances"]
    rows = training_rows(workdir / "student_ce")
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert summary["heldout_loss"] < 0.9 * math.log(summary["num_senones"])
    assert set(report["decode_student_ce"]["summary"]["wer"]) == {"noisy"}


def _checkpoint_files(workdir):
    """path -> (bytes, mtime_ns, inode) of every file under a trained system's checkpoints."""
    return {
        str(path.relative_to(workdir)): (path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_ino)
        for path in sorted(workdir.glob("*/checkpoints/**/*"))
        if path.is_file()
    }


def test_a_decoding_option_reruns_only_evaluation(recipe, tmp_path):
    """--config.decode.beam on a finished workdir: every training stage is skipped, every
    evaluation stage reruns, and no checkpoint file is rewritten, moved or deleted."""
    import shutil

    from conftest import tiny_config

    workdir = tmp_path / "run"
    shutil.copytree(recipe[0], workdir)
    before = _checkpoint_files(workdir)
    trained = {"teacher_ce", "teacher_seq", "student_ce", "student_ce_from_teacher_seq", "student_seq"}
    assert {p.split("/")[0] for p in before} == trained
    config = tiny_config(**{"decode.beam": "8.0", "decode.bootstrap_replications": 50})
    report = run_asr(config, workdir, until="decode_student_seq")
    ran = {name for name, info in report.items() if info["status"] == "ran"}
    assert ran == {"gmm"} | {f"decode_{system}" for system in trained}
    assert _checkpoint_files(workdir) == before
    assert not (workdir / "superseded").exists()
    results = json.loads((workdir / "results.json").read_text())
    assert set(results["systems"]) == {"gmm"} | trained


def test_oov_rate_of_every_test_condition(recipe):
    """The share of test reference tokens outside graph/words.txt, recomputed here from the files."""
    from tsasr.recipes.asr import evaluate

    workdir, _, report = recipe
    results = json.loads((workdir / "results.json").read_text())
    vocabulary = {line.split()[0] for line in (workdir / "graph" / "words.txt").read_text().splitlines()}
    for condition in ("clean", "noisy", "rerecorded"):
        tokens = [w for r in acoustic.read(workdir, layout.CONDITIONS[condition]) for w in r["text"].split()]
        expected = 100.0 * sum(w not in vocabulary for w in tokens) / len(tokens)
        assert results["conditions"][condition]["words"] == len(tokens)
        assert abs(results["conditions"][condition]["oov_rate"] - expected) < 0.006
        assert report["oov"]["summary"][condition] == results["conditions"][condition]["oov_rate"]
    hand = evaluate.out_of_vocabulary([{"text": "play jazz now"}, {"text": "play zydeco"}], {"play", "jazz", "now"})
    assert (hand["words"], hand["oov_words"], hand["oov_rate"], hand["most_frequent_oov"]) == (5, 1, 20.0, ["zydeco"])


def test_an_extra_test_set_is_scored_as_its_own_condition(recipe, tmp_path):
    """A fourth condition from corpus.extra_tests: here the clean test set again under another
    name, so its WER must equal the clean condition's exactly; results.md gets its column."""
    import shutil

    from tsasr.evaluate import report
    from tsasr.recipes.asr import REPORT, evaluate

    from conftest import tiny_config

    workdir = tmp_path / "run"
    shutil.copytree(recipe[0], workdir)
    shutil.copy(workdir / "corpus" / "test.jsonl", workdir / "corpus" / "test_again.jsonl")
    config = tiny_config(**{"corpus.extra_tests": "again=unused", "decode.bootstrap_replications": 50})
    wers = evaluate.decode_stage("teacher_ce", None)(config, workdir)["wer"]
    assert set(wers) == {"clean", "noisy", "rerecorded", "again"}
    assert wers["again"] == wers["clean"]
    assert "WER (%) again" in report.results_table(json.loads((workdir / "results.json").read_text()), REPORT)
