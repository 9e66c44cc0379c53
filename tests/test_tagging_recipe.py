"""Recipe `tagging` end to end on its --tiny config through tsasr.recipe.run: every stage, every
system with intervals in results.json, the gains section and its plot, and a rerun that skips all."""

import json

from tsasr import recipe as recipe_lib


def test_tiny_tagging_recipe_runs_every_stage(tmp_path):
    recipe = recipe_lib.load("tagging")
    config = recipe.base_config()
    recipe.tiny(config)
    config.lock()
    report = recipe_lib.run(recipe, config, tmp_path)
    assert [s.name for s in recipe.stages(config)] == ["corpus", "teacher", "student_s1", "student_s2", "score"]
    systems = json.loads((tmp_path / "results.json").read_text())["systems"]
    expected = {"teacher"} | {f"student_{s}_{m}" for s in ("s1", "s2") for m in ("bce", "kd", "kd_sp", "kd_iusp")}
    assert set(systems) == expected
    for name, entry in systems.items():
        for metric in ("micro_auprc", "macro_auprc"):
            low, high = entry["ci"][metric]["test"]
            assert 0.0 <= low <= entry[metric]["test"] <= high <= 1.0, name
        assert 0.0 <= entry["sklearn_micro_ap"]["test"] <= 1.0
    gains = (tmp_path / "score" / "iusp_gains.md").read_text()
    assert "| s1 |" in gains and "| s2 |" in gains and "1.27-2.22" in gains
    assert (tmp_path / "score" / "auprc_vs_size.png").read_bytes()[:4] == b"\x89PNG"
    recipe_lib.write_report(recipe, config, tmp_path)
    assert "IUSP vs SP" in (tmp_path / "results.md").read_text()
    again = recipe_lib.run(recipe, config, tmp_path)
    assert all(entry["status"] == "skipped" for entry in again.values()), again
    assert report
