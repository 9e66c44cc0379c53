import json
import shutil

from tsasr import pipeline
from tsasr import workdir as wd

from conftest import tiny_config


def test_rerun_skips_every_stage(tiny_run):
    workdir, config = tiny_run
    report = pipeline.run_stages(config, workdir, until="noisify")
    assert {k: v["status"] for k, v in report.items()} == {
        "corpus": "skipped",
        "noise": "skipped",
        "noisify": "skipped",
    }


def test_changed_field_reruns_only_downstream(tiny_run, tmp_path):
    source, config = tiny_run
    workdir = tmp_path / "work"
    shutil.copytree(source, workdir)
    changed = tiny_config(**{"--config.noisify.snr_db": "(5.0, 6.0)"})
    report = pipeline.run_stages(changed, workdir, until="noisify")
    assert [report[s]["status"] for s in ("corpus", "noise", "noisify")] == ["skipped", "skipped", "ran"]
    line = json.loads((workdir / "noisy" / "dev.jsonl").read_text().splitlines()[0])
    assert 5.0 <= line["mix"]["snr_db"] <= 6.0
    keys = pipeline.stage_keys(changed)
    assert keys["noise"] == pipeline.stage_keys(config)["noise"]
    changed_noise = tiny_config(**{"--config.noise.clip_seconds": "8.0"})
    new_keys = pipeline.stage_keys(changed_noise)
    assert new_keys["corpus"] == keys["corpus"]
    assert new_keys["noise"] != keys["noise"] and new_keys["noisify"] != pipeline.stage_keys(config)["noisify"]


def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "out.json"
    try:
        with wd.atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    except RuntimeError:
        pass
    assert not target.exists() and list(tmp_path.iterdir()) == []
