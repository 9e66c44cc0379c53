import json

import numpy as np

from tsasr.evaluate import report
from tsasr.evaluate import results

from conftest import ASR

PAPER = {
    "source": "the paper",
    "system": "student_seq",
    "reference": "teacher_seq",
    "relative": {"clean": -10.08, "noisy": -28.67, "rerecorded": -19.58},
}


def _scored(tmp_path):
    results.update_results(tmp_path, "gmm", {"wer": {"clean": 20.0, "noisy": 80.0, "rerecorded": 90.0}})
    results.update_results(tmp_path, "teacher_ce", {"wer": {"clean": 12.5, "noisy": 50.0, "rerecorded": 50.0}})
    results.update_results(tmp_path, "teacher_seq", {"wer": {"clean": 10.0, "noisy": 50.0, "rerecorded": 40.0}})
    results.update_results(
        tmp_path,
        "student_seq",
        {"wer": {"clean": 9.0, "noisy": 35.0, "rerecorded": 32.0}},
        {"ci": {"wer": {"noisy": [30.0, 40.0]}}},
    )


def test_report_tables_plots_and_relative_changes(tmp_path):
    _scored(tmp_path)
    (tmp_path / "student_ce").mkdir()
    (tmp_path / "student_ce" / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": i, "loss": 5.0 - i}) + "\n" for i in range(4))
    )
    table = report.write_report(tmp_path, ASR.report, PAPER)
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:] if line.startswith("|")}
    assert list(rows) == ["gmm", "teacher_ce", "teacher_seq", "student_seq"]
    assert "35.00 [30.0, 40.0]" in rows["student_seq"] and "-30.0" in rows["student_seq"]
    assert "+100.0" in rows["gmm"]
    stored = json.loads((tmp_path / "results.json").read_text())
    # Against every named reference, in percent: (9 - 12.5) / 12.5 against the CE teacher.
    np.testing.assert_allclose(stored["relative_to"]["teacher_ce"]["wer"]["student_seq"]["clean"], -28.0)
    np.testing.assert_allclose(stored["relative_to"]["teacher_seq"]["wer"]["student_seq"]["noisy"], -30.0)
    assert stored["relative_to_teacher"] == stored["relative_to"]["teacher_seq"]["wer"]
    text = (tmp_path / "results.md").read_text()
    assert "## Against the paper" in text and "-28.7" in text and "this run: student_seq vs teacher_seq" in text
    for name in ("wer.png", "training_student_ce.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"plots/{name}" in text


def test_test_condition_facts_are_tabulated(tmp_path):
    _scored(tmp_path)
    results.update_conditions(tmp_path, {"clean": {"words": 120, "oov_rate": 2.5, "most_frequent_oov": ["x"]}})
    report.write_report(tmp_path, ASR.report)
    text = (tmp_path / "results.md").read_text()
    assert "## Test conditions" in text and "| clean | 2.5 | 120 |" in text


def test_no_paper_section_unless_the_experiment_declares_one(tmp_path):
    _scored(tmp_path)
    report.write_report(tmp_path, ASR.report)
    assert "Against the paper" not in (tmp_path / "results.md").read_text()


def test_relative_changes_fall_back_to_the_first_scored_reference(tmp_path):
    results.update_results(tmp_path, "teacher_ce", {"wer": {"clean": 10.0}})
    results.update_results(tmp_path, "student_ce", {"wer": {"clean": 8.0}})
    report.write_report(tmp_path, ASR.report)
    stored = json.loads((tmp_path / "results.json").read_text())
    assert set(stored["relative_to"]) == {"teacher_ce"}
    np.testing.assert_allclose(stored["relative_to_teacher"]["student_ce"]["clean"], -20.0)


def test_report_without_results(tmp_path):
    assert "No system" in report.write_report(tmp_path, ASR.report)


def test_table2_shape_against_both_teachers_with_p(tmp_path):
    """The paper's Table 2: every row against the CE teacher, and against the sequence-trained
    teacher where the paper brackets one; this run's change (with its paired interval where
    results.json has one) beside the paper's, and the bootstrap probability of improving on
    that teacher from results.json."""
    _scored(tmp_path)
    results.update_results(
        tmp_path,
        "student_seq",
        {},
        {
            "p_better_than": {"teacher_seq": {"clean": 0.97}, "teacher_ce": {"clean": 0.999}},
            "relative_ci95_to": {"teacher_seq": {"clean": [-18.04, -1.96]}},  # scoring.relative_change_interval's
        },
    )
    paper = {
        "source": "the paper, Table 2",
        "labels": {"student_seq": "student CE, then sMBR"},
        "table": {
            "teacher_ce": {"teacher_seq": {"clean": -5.79}, "student_seq": {"clean": -15.29, "noisy": -29.36}},
            "teacher_seq": {"student_seq": {"clean": -10.08}},
        },
    }
    report.write_report(tmp_path, ASR.report, paper)
    text = (tmp_path / "results.md").read_text()
    section = text[text.index("## Against the paper") :]
    against_ce, against_seq = section.split("against `teacher_ce`")[1].split("against `teacher_seq`")
    rows = {line.split("|")[1].strip(): line for line in against_ce.splitlines() if line.startswith("| ")}
    # (9 - 12.5) / 12.5 = -28.0 beside the paper's -15.3; (35 - 50) / 50 = -30.0 beside -29.4.
    assert "-28.0 [-15.3]" in rows["student_seq (student CE, then sMBR)"]
    assert "-30.0 [-29.4]" in rows["student_seq (student CE, then sMBR)"]
    assert "| 0.999 |" in rows["student_seq (student CE, then sMBR)"]
    assert "-20.0 [-5.8]" in rows["teacher_seq"]  # (10 - 12.5) / 12.5
    seq_rows = [line for line in against_seq.splitlines() if line.startswith("| student_seq")]
    assert len(seq_rows) == 1 and "-10.0 (-18.0, -2.0) [-10.1]" in seq_rows[0] and "| 0.970 |" in seq_rows[0]
