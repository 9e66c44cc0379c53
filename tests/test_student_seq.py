"""student_seq's regulariser towards its teacher's soft labels (sequence.kd_regularize): the
step's loss is LF-MMI plus the weight times the student's soft-target cross-entropy, checked
against float64 numpy on the labels as stored; the streamed records carry the same targets;
only student_seq's key reads the field; an online student, which stores no labels, is refused
before any work.

Reuses the session's tiny run up to student_ce and copies only what student_seq reads."""

import pathlib
import shutil

import jax
import numpy as np
import pytest
from conftest import run_asr, tiny_config

from tsasr import pipeline
from tsasr.data import layout
from tsasr.data import loader as loader_lib
from tsasr.data import records
from tsasr.distill import soft_labels as sl
from tsasr.recipe import load as load_recipe
from tsasr.recipes.asr import acoustic
from tsasr.recipes.asr import checks
from tsasr.recipes.asr import sequence

ASR = load_recipe("asr")
EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"


class Stopped(Exception):
    pass


@pytest.fixture(scope="module")
def student(tiny_run, tmp_path_factory):
    """A workdir with all student_seq reads, copied from the tiny run after its student_ce."""
    shared, config = tiny_run
    run_asr(config, shared, until="student_ce")  # the shared run's stages (test_recipe.py reuses them)
    workdir = tmp_path_factory.mktemp("student_seq") / "run"
    for part in ("corpus", "noisy", "align", "labels", "student_ce"):
        shutil.copytree(shared / part, workdir / part)
    return workdir


def _captured(workdir, weight):
    """(loss_fn, first training batch) that student_seq hands the training loop at `weight`."""
    got = {}

    def capture(train_cfg, model, loss_fn, batches_fn, directory, **kwargs):
        got.update(loss_fn=loss_fn, batch=next(iter(batches_fn(0))))
        raise Stopped

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sequence.loop, "train", capture)
        with pytest.raises(Stopped):
            sequence.run_student(tiny_config(**{"sequence.kd_regularize": weight}), workdir)
    return got["loss_fn"], got["batch"]


def _soft_ce_float64(logits, paddings, rows, reader, top_k, temperature):
    """Mean over real frames of -sum_j p_j log softmax(logits)[id_j], p the stored labels' top_k at T."""
    total, frames = 0.0, 0
    for b, clean_id in enumerate(rows):
        n = int(np.sum(paddings[b] == 0.0))
        ids, probs = reader.targets(clean_id, top_k, temperature)
        x = np.asarray(logits[b, :n], np.float64)
        log_softmax = x - x.max(-1, keepdims=True)
        log_softmax -= np.log(np.exp(log_softmax).sum(-1, keepdims=True))
        total += -np.sum(np.asarray(probs, np.float64) * np.take_along_axis(log_softmax, ids, axis=1))
        frames += n
    return total / frames


def test_the_loss_adds_the_weighted_soft_target_ce(student):
    config = tiny_config()
    weight = 0.25
    with_kd, batch = _captured(student, weight)
    alone, _ = _captured(student, 0.0)
    noisy = {r["id"]: r["clean_id"] for r in acoustic.read(student, layout.noisy(layout.TRAIN_LABELLED))}
    rows = [noisy[str(u)] for u in batch.pop("ids")]
    assert {"soft_ids", "soft_logits"} <= set(batch) and batch["soft_ids"].shape[2] == config.student.top_k
    model, params, _ = acoustic.load_system(student, "student_ce")
    rng = jax.random.PRNGKey(0)
    total, metrics, _ = with_kd(params, batch, rng, train=False)
    lfmmi, _, _ = alone(params, batch, rng, train=False)
    assert float(metrics["lfmmi_loss"]) == pytest.approx(float(lfmmi), rel=1e-6)
    logits, paddings = model.apply({"params": params}, batch["features"], batch["feature_paddings"], train=False)
    reader = sl.SoftLabelReader(student / "labels")
    reference = _soft_ce_float64(
        np.asarray(logits), np.asarray(paddings), rows, reader, config.student.top_k, config.student.temperature
    )
    assert float(metrics["soft_ce_loss"]) == pytest.approx(reference, rel=1e-4)
    assert float(total) == pytest.approx(float(lfmmi) + weight * reference, rel=1e-4)


def test_streamed_records_carry_the_clean_originals_soft_labels(student, tmp_path):
    config = tiny_config()
    kd = sequence.student_distillation(config, student)
    assert (kd.weight, kd.top_k, kd.temperature) == (
        config.sequence.kd_regularize,
        config.student.top_k,
        config.student.temperature,
    )
    alignments = {part: np.load(student / "align" / f"{part}.npz") for part in ("senones", "phones")}
    alignments.update(kd.columns(alignments["senones"]))
    train = [
        r
        for r in acoustic.read(student, layout.noisy(layout.TRAIN_LABELLED))
        if r["clean_id"] in alignments["senones"].files
    ]
    key = {r["id"]: r["clean_id"] for r in train}
    sequence.write_records(tmp_path, train, key, alignments, 2)
    assert {"soft_ids", "soft_logits", "senones", "phones"} <= set(records.read_index(tmp_path)["keys"])
    batch = next(loader_lib.Loader(tmp_path, loader_lib.LoaderConfig(batch_size=4, bucket_boundaries=(256, 512)))(0))
    reader = sl.SoftLabelReader(student / "labels")
    for row, utt in enumerate(batch["ids"]):
        ids, logits = reader.raw(key[str(utt)])
        n = len(ids)
        np.testing.assert_array_equal(batch["soft_ids"][row, :n], ids[:, : kd.top_k])
        np.testing.assert_array_equal(batch["soft_logits"][row, :n], logits[:, : kd.top_k])
        np.testing.assert_array_equal(batch["senones"][row, :n], alignments["senones"][key[str(utt)]])


def test_a_label_of_another_length_names_the_utterance(student, tmp_path):
    kd = sequence.student_distillation(tiny_config(), student)
    clean_id = next(iter(np.load(student / "align" / "senones.npz").files))
    short = {clean_id: np.zeros(3, np.int32)}
    with pytest.raises(sl.SoftLabelError, match=f"utterance {clean_id!r}: soft labels have"):
        kd.columns(short)["soft_ids"][clean_id]


def test_only_student_seq_is_keyed_by_the_regulariser():
    keys = {}
    for weight in (0.0, 0.1, 0.3):
        config = tiny_config(**{"sequence.kd_regularize": weight})
        with config.unlocked():
            config.baselines.multicondition = True
        keys[weight] = pipeline.stage_keys(config, ASR.stages(config))
    for stage in ("teacher_seq", "multicondition_seq", "student_ce", "decode_teacher_seq"):
        assert keys[0.0][stage] == keys[0.1][stage] == keys[0.3][stage], stage
    assert len({keys[w]["student_seq"] for w in keys}) == 3
    assert len({keys[w]["decode_student_seq"] for w in keys}) == 3
    # At 0 (LF-MMI alone) student_seq keeps the key it had before the field existed.
    before = tiny_config()
    with before.unlocked():
        del before.sequence["kd_regularize"]
    assert pipeline.stage_keys(before, ASR.stages(before))["student_seq"] == keys[0.0]["student_seq"]


def test_an_online_student_is_refused_before_any_work():
    online = tiny_config(**{"student.online": True})
    problem = checks.distillation_problem(online)
    assert problem.startswith("sequence.kd_regularize=0.1 needs the teacher's stored soft labels")
    assert problem in checks.problems(online)
    assert checks.distillation_problem(tiny_config(**{"student.online": True, "sequence.kd_regularize": 0.0})) == ""
    with pytest.raises(ValueError, match="student.online=True stores none"):
        sequence.student_distillation(online, "unused")


def test_the_online_experiment_runs_student_seq_without_it():
    from tsasr import config as config_lib

    config = config_lib.experiment_config(str(EXPERIMENTS / "online_top20_T2.py"), tiny_run=True)
    assert config.student.online and config.sequence.kd_regularize == 0.0
    assert checks.distillation_problem(config) == ""
