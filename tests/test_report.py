import json

from tsasr import report
from tsasr.decode import results


def test_report_tables_and_plots(tmp_path):
    results.update_results(tmp_path, "gmm", {"clean": 20.0, "noisy": 80.0, "rerecorded": 90.0})
    results.update_results(tmp_path, "teacher_seq", {"clean": 10.0, "noisy": 50.0, "rerecorded": 40.0})
    results.update_results(
        tmp_path, "student_seq", {"clean": 9.0, "noisy": 35.0, "rerecorded": 32.0}, {"ci": {"noisy": [30.0, 40.0]}}
    )
    (tmp_path / "student_ce").mkdir()
    (tmp_path / "student_ce" / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": i, "loss": 5.0 - i}) + "\n" for i in range(4))
    )
    table = report.write_report(tmp_path)
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert list(rows) == ["gmm", "teacher_seq", "student_seq"]
    assert "35.00 [30.0, 40.0]" in rows["student_seq"] and "-30.0" in rows["student_seq"]
    assert "+100.0" in rows["gmm"]
    text = (tmp_path / "results.md").read_text()
    assert "-28.7" in text and "this run: student_seq" in text
    for name in ("wer.png", "training_student_ce.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"plots/{name}" in text


def test_report_without_results(tmp_path):
    assert "No system" in report.write_report(tmp_path)
