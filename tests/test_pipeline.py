import json
import shutil

import numpy as np

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


def test_write_audio_equals_the_standard_wave_writer(tmp_path):
    import wave

    import soundfile

    audio = np.random.default_rng(0).uniform(-1.2, 1.2, 16001)
    audio[:6] = [1.0, -1.0, 0.5 / 32768, -0.5 / 32768, 1.5 / 32768, 32767.5 / 32768]  # clipping and rounding ties
    wd.write_audio(tmp_path / "ours" / "a.wav", audio)
    wd.write_audio(tmp_path / "ours" / "f32.wav", audio.astype(np.float32))
    pcm = np.clip(np.rint(audio * 32768.0), -32768, 32767).astype("<i2")
    pcm32 = np.clip(np.rint(audio.astype(np.float32).astype(np.float64) * 32768.0), -32768, 32767).astype("<i2")
    read32, _ = soundfile.read(tmp_path / "ours" / "f32.wav", dtype="int16")
    assert np.array_equal(read32, pcm32)
    with wave.open(str(tmp_path / "reference.wav"), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16000)
        f.writeframes(pcm.tobytes())
    assert (tmp_path / "ours" / "a.wav").read_bytes() == (tmp_path / "reference.wav").read_bytes()
    read, rate = soundfile.read(tmp_path / "ours" / "a.wav", dtype="int16")
    assert rate == 16000 and np.array_equal(read, pcm)
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == ["a.wav", "f32.wav"]  # no temporary left


def test_results_keep_only_the_systems_of_the_config_as_run(tmp_path):
    """results.json after a config change: a rerun stage's old rows go (a condition it no longer
    scores too), rows of grid points no longer run and of stages not in the run go, others stay."""
    from tsasr.decode import results as results_lib

    def scorer(wers_by_system):
        def run(config, workdir):
            for system, wers in wers_by_system.items():
                results_lib.update_results(workdir, system, wers)
            return {}

        return run

    baseline = pipeline.Stage("baseline", scorer({"base": {"clean": 10.0}}), ("seed",), outputs=("decode/base",))

    def grid(points):
        rows = {f"g{p}": {"clean": 20.0 + p, **({"noisy": 40.0} if len(points) > 1 else {})} for p in points}
        outputs = tuple(f"decode/g{p}" for p in points)
        return pipeline.Stage("grid", scorer(rows), ("seed", "student"), deps=("baseline",), outputs=outputs)

    config = tiny_config()
    pipeline.run_stages(config, tmp_path, stages=(baseline, grid([1, 2])))
    results_lib.update_results(tmp_path, "student_ce", {"clean": 5.0})  # e.g. another experiment's row
    before = json.loads((tmp_path / "results.json").read_text())["systems"]
    assert set(before) == {"base", "g1", "g2", "student_ce"}

    changed = tiny_config(**{"--config.student.temperature": "3.0"})
    report = pipeline.run_stages(changed, tmp_path, stages=(baseline, grid([1])))
    assert report["baseline"]["status"] == "skipped" and report["grid"]["status"] == "ran"
    systems = json.loads((tmp_path / "results.json").read_text())["systems"]
    assert set(systems) == {"base", "g1"}
    assert systems["g1"]["wer"] == {"clean": 21.0} and systems["base"]["wer"] == {"clean": 10.0}
