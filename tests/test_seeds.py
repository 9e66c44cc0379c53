"""python -m tsasr.seeds: every network retrained per training seed on data made once, and the
statistics over seeds (checked against scipy's t distribution and numpy in float64)."""

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ASR, ROOT, run_asr, tiny_config
from scipy import stats

from tsasr import pipeline, seeds
from tsasr import workdir as wd
from tsasr.decode import scoring
from tsasr.evaluate import report as report_lib
from tsasr.evaluate import results as results_lib
from tsasr.recipes.asr import RECIPE, REPORT
from tsasr.run import load


def _seed_config(seed: int):
    return tiny_config(**{field: seed for field in seeds.network_seed_fields(tiny_config())})


def _stages():
    return ASR.stages(tiny_config())


def test_every_network_of_each_recipe_gets_the_seed():
    assert set(seeds.network_seed_fields(tiny_config())) == {
        "teacher.train.seed",
        "sequence.train.seed",
        "student.train.seed",
    }
    overrides = seeds.seed_overrides(tiny_config(), 3)
    assert sorted(overrides) == [f"--config.{f}.train.seed=3" for f in ("sequence", "student", "teacher")]
    for experiment in ("tagging_iusp", "anomaly_dcase2020", "wakeword"):
        path = ROOT / "experiments" / f"{experiment}.py"
        config, _ = load(str(path), True, [])
        fields = seeds.network_seed_fields(config)
        assert fields, experiment
        seeded, _ = load(str(path), True, seeds.seed_overrides(config, 2))
        for field in fields:
            node = seeded
            for part in field.split("."):
                node = node[part]
            assert node == 2, (experiment, field)


def test_a_seed_changes_the_networks_keys_and_no_data_stage_key():
    stages = _stages()
    base = pipeline.stage_keys(_seed_config(0), stages)
    other = pipeline.stage_keys(_seed_config(1), stages)
    same = {name for name in base if base[name] == other[name]}
    assert {"corpus", "noise", "noisify", "align", "graph", "gmm", "oov"} <= same
    assert not {"teacher_ce", "teacher_seq", "label", "student_ce", "student_seq", "decode_student_seq"} & same


def test_a_seed_starts_from_hard_links_to_the_finished_data_and_reruns_none_of_it(tiny_run, tmp_path):
    made, _ = tiny_run  # corpus, noise, noisify of the tiny run at seed 0
    base, target = tmp_path / "run", tmp_path / "run" / seeds.SEEDS_DIR / "1"
    shutil.copytree(made, base, ignore=shutil.ignore_patterns(*seeds.SEEDS_DIR, "decode", "records", "superseded"))
    stages = _stages()
    base_keys = pipeline.stage_keys(_seed_config(0), stages)
    keys = pipeline.stage_keys(_seed_config(1), stages)
    # A teacher finished at seed 0 (its marker and a file of its outputs): seed 1 trains its own.
    wd.write_text(base / "teacher_ce" / "model.json", "{}")
    wd.write_marker(base, "teacher_ce", base_keys["teacher_ce"], {})
    finished = [s.name for s in stages if (wd.read_marker(base, s.name) or {}).get("key") == base_keys[s.name]]
    assert {"corpus", "noise", "noisify", "teacher_ce"} <= set(finished)
    shared = seeds.share_finished_stages(base, target, stages, base_keys, keys)
    assert set(shared) == {name for name in finished if keys[name] == base_keys[name]}
    assert "teacher_ce" not in shared and not (target / "teacher_ce").exists()
    audio = next(p for p in (base / "noisy").rglob("*") if p.is_file())
    assert os.stat(audio).st_ino == os.stat(target / audio.relative_to(base)).st_ino
    report = run_asr(_seed_config(1), target, until="noisify")
    assert {r["status"] for r in report.values()} == {"skipped"}
    # Sharing again gives nothing: the target has every one of those stages now.
    assert seeds.share_finished_stages(base, target, stages, base_keys, keys) == []


def _results(wer: dict[str, dict[str, float]]) -> dict:
    return {"systems": {system: {"wer": by_condition} for system, by_condition in wer.items()}}


def test_the_statistics_over_seeds_are_the_t_distributions():
    rng = np.random.default_rng(0)
    teacher = rng.uniform(15, 25, size=(4, 3))
    student = teacher * rng.uniform(0.8, 1.05, size=(4, 3))
    conditions = ("clean", "noisy", "rerecorded")
    results = {
        seed: _results(
            {
                "teacher_seq": dict(zip(conditions, teacher[i])),
                "student_seq": dict(zip(conditions, student[i])),
                "gmm": dict(zip(conditions[:2], teacher[i] * 2)),  # not every condition: those are left out
            }
        )
        for i, seed in enumerate((0, 3, 5, 9))
    }
    summary = seeds.summarise(results, REPORT)
    assert summary["seeds"] == [0, 3, 5, 9]
    wer = summary["metrics"]["wer"]
    assert list(wer["values"]) == ["gmm", "teacher_seq", "student_seq"]  # the recipe's order
    assert set(wer["values"]["gmm"]) == {"clean", "noisy"}
    for j, condition in enumerate(conditions):
        entry = wer["values"]["student_seq"][condition]
        column = student[:, j]
        assert entry["by_seed"] == pytest.approx(column.tolist())
        assert entry["mean"] == pytest.approx(column.mean())
        assert entry["sd"] == pytest.approx(np.sqrt(((column - column.mean()) ** 2).sum() / 3))
        low, high = stats.t.interval(0.95, 3, loc=column.mean(), scale=stats.sem(column))
        assert entry["ci95"] == pytest.approx([low, high])
        change = 100 * (student[:, j] / teacher[:, j] - 1)
        rel = wer["relative_to"]["teacher_seq"]["student_seq"][condition]
        assert rel["by_seed"] == pytest.approx(change.tolist())
        assert rel["ci95"] == pytest.approx(list(stats.t.interval(0.95, 3, loc=change.mean(), scale=stats.sem(change))))
        assert rel["seeds_improving"] == int((change < 0).sum())
        assert rel["change_of_means"] == pytest.approx(100 * (student[:, j].mean() / teacher[:, j].mean() - 1))
    assert "teacher_ce" not in wer["relative_to"]  # a reference not scored has no rows


def test_a_metric_where_higher_is_better_counts_rises_as_improvements():
    spec = report_lib.ReportSpec(
        metrics=(report_lib.Metric("auc", "AUC (%)", lower_is_better=False),), conditions=("dev",), references=("base",)
    )
    results = {
        s: {"systems": {"base": {"auc": {"dev": 80.0}}, "new": {"auc": {"dev": 80.0 + d}}}}
        for s, d in enumerate((1, 2, -1))
    }
    rel = seeds.summarise(results, spec)["metrics"]["auc"]["relative_to"]["base"]["new"]["dev"]
    assert rel["seeds_improving"] == 2
    one = seeds.summarise({0: results[0]}, spec)["metrics"]["auc"]["values"]["new"]["dev"]
    assert one["sd"] is None and one["ci95"] is None  # no spread from one seed


def test_the_report_shows_each_seed_and_the_papers_change(tmp_path):
    results = {
        seed: _results({"teacher_seq": {"clean": 20.0 + seed}, "student_seq": {"clean": 18.0 + seed}})
        for seed in (0, 1)
    }
    for seed, content in results.items():
        wd.write_json(seeds.seed_workdir(tmp_path, seed) / "results.json", content)
    paper = {"table": {"teacher_seq": {"student_seq": {"clean": -10.1}}}}
    text = seeds.write_seed_report(tmp_path, [0, 1], REPORT, paper)
    assert "| student_seq | 18.50 ± 0.71 (18.00 / 19.00)" in text  # WER to its 2 digits
    assert "2/2 [-10.1]" in text
    assert (tmp_path / "plots" / "seeds_wer.png").stat().st_size > 0
    assert wd.read_json(tmp_path / "seeds.json")["seeds"] == [0, 1]


@pytest.mark.parametrize("argv", [["x.py", "--seeds", "1", "1"], ["x.py", "--seeds", "-1"], ["x.py", "--bad"]])
def test_bad_arguments_stop_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        seeds.parse_args(argv)
    assert stop.value.code == 2


def test_a_bucket_workdir_is_refused_before_any_work(tmp_path, capsys):
    assert seeds.main([str(ROOT / "experiments" / "top20_T2.py"), "--workdir", "gs://bucket/run"]) == 2
    assert "gcsfuse" in capsys.readouterr().err
    assert not (pathlib.Path("gs:") / "bucket").exists()


def test_the_asr_recipes_utterance_errors_add_up_to_its_scored_errors(tiny_run):
    workdir, config = tiny_run
    run_asr(config, workdir, until="decode_teacher_ce")
    scored = results_lib.read(workdir)["systems"]["teacher_ce"]["details"]
    for condition in ("clean", "noisy", "rerecorded"):
        errors = RECIPE.item_errors(workdir, "teacher_ce", condition)
        assert (sum(errors.values()), len(errors)) == (scored[condition]["errors"], scored[condition]["utterances"])
    with pytest.raises(FileNotFoundError, match="decode"):
        RECIPE.item_errors(workdir, "no_such_system", "clean")


def test_item_errors_bootstrap_each_change_over_seeds_and_items(caplog):
    """A student that makes fewer errors on most utterances at every seed: p near 1 and an
    interval below 0 around the change of the mean WERs; the same draws as scoring's."""
    rng = np.random.default_rng(1)
    words = rng.integers(3, 12, 60)
    items = [f"u{i:02d}" for i in range(60)]
    errors = {
        seed: {
            "teacher_seq": rng.binomial(words, 0.25).astype(float),
            "student_seq": rng.binomial(words, 0.18).astype(float),
        }
        for seed in (0, 1, 2)
    }
    results = {
        seed: _results({s: {"clean": 100 * e.sum() / words.sum()} for s, e in by_system.items()})
        for seed, by_system in errors.items()
    }
    row = seeds.summarise(results, REPORT, lambda seed, system, c: dict(zip(items, errors[seed][system])), 2000)
    row = row["metrics"]["wer"]["relative_to"]["teacher_seq"]["student_seq"]["clean"]
    low, high = row["bootstrap_ci95"]
    assert low < row["change_of_means"] < high < 0 and row["p_improves"] > 0.99
    stacked = [np.stack([errors[s][name] for s in (0, 1, 2)]) for name in ("teacher_seq", "student_seq")]
    draws = scoring.seeded_relative_changes(*stacked, replications=2000)
    assert [low, high] == pytest.approx(np.percentile(draws, [2.5, 97.5]).tolist())
    # A seed scored on other items: no bootstrap for that pair, and the log says why.
    other = lambda seed, system, c: dict(zip(items if seed else items[::-1][:59], errors[seed][system]))  # noqa: E731
    row = seeds.summarise(results, REPORT, other, 100)["metrics"]["wer"]["relative_to"]["teacher_seq"]["student_seq"]
    assert "bootstrap_ci95" not in row["clean"] and "test items differ" in caplog.text


def test_the_command_runs_every_seed_and_resumes(tmp_path):
    """python -m tsasr.seeds end to end (up to the noisy data, so no network trains): seed 0 in
    the workdir, seed 2 in seeds/2/ from links to it, the report; a second call reruns nothing."""
    workdir = tmp_path / "run"
    command = [sys.executable, "-m", "tsasr.seeds", str(ROOT / "experiments" / "top20_T2.py"), "--tiny"]
    command += ["--seeds", "0", "2", "--until", "noisify", "--workdir", str(workdir)]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "seed 2: corpus, noise, noisify shared" in first.stderr
    assert wd.read_marker(workdir / "seeds" / "2", "noisify")["key"] == wd.read_marker(workdir, "noisify")["key"]
    assert wd.read_json(workdir / "seeds.json")["seeds"] == [0, 2]
    again = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert again.returncode == 0 and " running" not in again.stderr and "shared" not in again.stderr


def test_a_seeds_model_of_another_key_is_moved_aside_not_lost(tmp_path):
    """Sharing a stage that the seed's workdir holds under another key clears it as the runner
    does: the old model goes to superseded/, the shared one is linked in its place."""
    stage = pipeline.Stage("train_x", lambda c, w: {}, ("seed",), outputs=("model",), kind="train")
    base, target = tmp_path / "base", tmp_path / "target"
    for workdir, key, text in ((base, "k1", "new"), (target, "k0", "old")):
        wd.write_text(workdir / "model" / "weights", text)
        wd.write_marker(workdir, "train_x", key, {})
    assert seeds.share_finished_stages(base, target, (stage,), {"train_x": "k1"}, {"train_x": "k1"}) == ["train_x"]
    assert (target / "model" / "weights").read_text() == "new"
    assert (target / pipeline.SUPERSEDED / "model.k0" / "weights").read_text() == "old"
    assert wd.read_marker(target, "train_x")["key"] == "k1"
