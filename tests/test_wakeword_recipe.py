"""Recipe `wakeword` end to end on its `tiny` config through tsasr.recipe.run: corpus (with a
user's recordings), features, the three stage-1 systems, stage 2, evaluation, report."""

import json
import math

import numpy as np

from tsasr import config as config_lib
from tsasr import recipe as recipe_lib
from tsasr import workdir as wd


def test_tiny_recipe_runs_every_stage(tmp_path):
    recipe = recipe_lib.load("wakeword")
    config = recipe.base_config()
    recipe.tiny(config)
    users = tmp_path / "recordings"
    wd.write_audio(users / "yes.wav", (0.05 * np.sin(np.arange(24000) * 0.07)).astype(np.float32))
    wd.write_audio(users / "no.wav", (0.05 * np.sin(np.arange(32000) * 0.03)).astype(np.float32))
    (users / "manifest.jsonl").write_text(
        json.dumps({"id": "yes", "audio": "yes.wav", "wake_start": 0.3, "wake_end": 0.9})
        + "\n"
        + json.dumps({"id": "no", "audio": "no.wav"})
        + "\n"
    )
    config.corpus.user_manifest = str(users / "manifest.jsonl")
    config.workers = 1
    config.lock()
    workdir = tmp_path / "run"
    report = recipe_lib.run(recipe, config, workdir)
    assert [s for s in report] == [s.name for s in recipe.stages(config)]
    results = json.loads((workdir / "results.json").read_text())
    systems = results["systems"]
    assert set(systems) == {
        "filler_lfbe",
        "monophone_lfbe",
        "monophone_dft",
        "monophone_lfbe_stage2",
        "monophone_dft_stage2",
    }
    for row in systems.values():
        for metric in ("frr_at_fa", "fa_per_hour_at_frr", "det_area"):
            assert set(row[metric]) == {"clean", "noisy", "user"}
            assert all(0 <= v <= 100 for v in row["frr_at_fa"].values())
            assert all(math.isnan(v) or v >= 0 for v in row[metric].values())
    assert (
        systems["monophone_lfbe"]["parameters"] == systems["monophone_dft"]["parameters"]
        or abs(systems["monophone_lfbe"]["parameters"] - systems["monophone_dft"]["parameters"])
        < 0.02 * systems["monophone_dft"]["parameters"]
    )
    assert results["conditions"]["user"] == {"positives": 1, "negative_hours": round(2.0 / 3600, 4)}
    assert results["metrics"]["det_area"]["lower_is_better"] is True
    for condition in ("clean", "noisy", "user"):
        assert (workdir / "plots" / f"det_{condition}.png").read_bytes()[:4] == b"\x89PNG"
    assert "monophone vs filler" in (workdir / "evaluate" / "paper.md").read_text()
    text = recipe_lib.write_report(recipe, config, workdir)
    assert "monophone_dft_stage2" in text


def test_experiment_config_loads():
    config = config_lib.experiment_config(
        __import__("pathlib").Path(__file__).parents[1] / "experiments" / "wakeword.py"
    )
    assert config.recipe == "wakeword" and config.name == "wakeword"
