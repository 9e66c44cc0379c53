import json
import shutil
import threading

import numpy as np

from tsasr import parallel, pipeline
from tsasr import workdir as wd

from conftest import ASR, run_asr, tiny_config


def test_rerun_skips_every_stage(tiny_run):
    workdir, config = tiny_run
    report = run_asr(config, workdir, until="noisify")
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
    report = run_asr(changed, workdir, until="noisify")
    assert [report[s]["status"] for s in ("corpus", "noise", "noisify")] == ["skipped", "skipped", "ran"]
    line = json.loads((workdir / "noisy" / "train_labelled.jsonl").read_text().splitlines()[0])
    assert 5.0 <= line["mix"]["snr_db"] <= 6.0
    # The training range moves alone: the noisy dev and test sets (noisify.test_snr_db) are the same mixes.
    for condition in ("dev", "test_noisy", "test_rerecorded"):
        assert (workdir / "noisy" / f"{condition}.jsonl").read_bytes() == (
            source / "noisy" / f"{condition}.jsonl"
        ).read_bytes()
    keys = pipeline.stage_keys(changed, ASR.stages(changed))
    original = pipeline.stage_keys(config, ASR.stages(config))
    assert keys["noise"] == original["noise"]
    changed_noise = tiny_config(**{"--config.noise.clip_seconds": "8.0"})
    new_keys = pipeline.stage_keys(changed_noise, ASR.stages(changed_noise))
    assert new_keys["corpus"] == keys["corpus"]
    assert new_keys["noise"] != keys["noise"] and new_keys["noisify"] != original["noisify"]


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
    from tsasr.evaluate import results as results_lib

    def scorer(wers_by_system):
        def run(config, workdir):
            for system, wers in wers_by_system.items():
                results_lib.update_results(workdir, system, {"wer": wers})
            return {}

        return run

    baseline = pipeline.Stage(
        "baseline", scorer({"base": {"clean": 10.0}}), ("seed",), kind="evaluate", systems=("base",)
    )

    def grid(points):
        rows = {f"g{p}": {"clean": 20.0 + p, **({"noisy": 40.0} if len(points) > 1 else {})} for p in points}
        systems = tuple(f"g{p}" for p in points)
        return pipeline.Stage(
            "grid", scorer(rows), ("seed", "student"), deps=("baseline",), kind="evaluate", systems=systems
        )

    def run(config, stages):
        report = pipeline.run_stages(config, tmp_path, stages)
        pipeline.prune_results(config, tmp_path, stages)
        return report

    config = tiny_config()
    run(config, (baseline, grid([1, 2])))
    results_lib.update_results(tmp_path, "student_ce", {"wer": {"clean": 5.0}})  # e.g. another experiment's row
    before = json.loads((tmp_path / "results.json").read_text())["systems"]
    assert set(before) == {"base", "g1", "g2", "student_ce"}

    changed = tiny_config(**{"--config.student.temperature": "3.0"})
    report = run(changed, (baseline, grid([1])))
    assert report["baseline"]["status"] == "skipped" and report["grid"]["status"] == "ran"
    systems = json.loads((tmp_path / "results.json").read_text())["systems"]
    assert set(systems) == {"base", "g1"}
    assert systems["g1"]["wer"] == {"clean": 21.0} and systems["base"]["wer"] == {"clean": 10.0}


def test_a_changed_training_config_moves_the_old_model_aside(tmp_path):
    """A training stage whose key changed starts clean, but the model of the old key is kept
    under WORKDIR/superseded/, never deleted; a data stage's stale outputs are removed."""

    def writer(name):
        def run(config, workdir):
            path = workdir / name / "weights.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            assert not path.exists()  # every run starts from a clean output directory
            path.write_bytes(str(config.seed).encode())
            return {}

        return run

    stages = (
        pipeline.Stage("prepare", writer("prepared"), ("corpus",), outputs=("prepared",)),
        pipeline.Stage("train", writer("model"), ("seed",), deps=("prepare",), outputs=("model",), kind="train"),
    )
    first = tiny_config()
    pipeline.run_stages(first, tmp_path, stages)
    old_key = pipeline.stage_keys(first, stages)["train"]
    second = tiny_config(**{"--config.seed": "7", "--config.corpus.hours": "0.06"})
    report = pipeline.run_stages(second, tmp_path, stages)
    assert [report[s]["status"] for s in ("prepare", "train")] == ["ran", "ran"]
    assert (tmp_path / "model" / "weights.bin").read_bytes() == b"7"
    assert (tmp_path / "superseded" / f"model.{old_key}" / "weights.bin").read_bytes() == b"0"
    assert not (tmp_path / "superseded" / "prepared").exists() and list((tmp_path / "superseded").iterdir()) == [
        tmp_path / "superseded" / f"model.{old_key}"
    ]


def test_a_training_stage_may_not_depend_on_an_evaluation_stage(tmp_path):
    def noop(config, workdir):
        return {}

    stages = (
        pipeline.Stage("train", noop, ("seed",), kind="train"),
        pipeline.Stage("score", noop, ("decode",), deps=("train",), kind="evaluate"),
        pipeline.Stage("retrain", noop, ("seed",), deps=("score",), kind="train"),
    )
    try:
        pipeline.run_stages(tiny_config(), tmp_path, stages)
    except ValueError as err:
        assert "train stage 'retrain' depends on the evaluation stage 'score'" in str(err)
    else:
        raise AssertionError("a training stage depending on an evaluation stage was accepted")


def test_no_asr_training_stage_reads_the_decoding_config():
    stages = ASR.stages(tiny_config())
    pipeline.check_stages(stages)  # and none depends on an evaluation stage
    trained = [s for s in stages if s.kind == "train"]
    assert {s.name for s in trained} >= {"teacher_ce", "teacher_seq", "student_ce", "student_seq"}
    for stage in trained:  # LF-MMI's chain output reads the prior floor, and only that
        assert not [k for k in stage.config_keys if k.startswith("decode") and k != "decode.prior_floor"], stage.name


def _square(x):
    return {"x": x, "square": x * x}


def _as_processes(monkeypatch, count):
    """Runs `count` simulated processes of a multi-host run as threads of this one: each sees
    its own index, and the pipeline's barrier waits for all (recording the names passed)."""
    local = threading.local()
    gate = threading.Barrier(count)
    names = {i: [] for i in range(count)}

    def barrier(name):
        names[local.index].append(name)
        gate.wait(timeout=60)

    monkeypatch.setattr(pipeline, "_processes", lambda: (local.index, count))
    monkeypatch.setattr(pipeline, "_barrier", barrier)

    def run(fn):
        results, errors = {}, []

        def process(i):
            local.index = i
            try:
                results[i] = fn(i)
            except Exception as err:  # surfaced in the test's thread
                errors.append(err)
                gate.abort()

        threads = [threading.Thread(target=process, args=(i,)) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return results

    return run, names


def test_map_resumable_splits_chunks_between_processes(tmp_path, monkeypatch):
    """Process p computes the chunks i % P == p; every process reads the whole result, equal to
    one process's, after barriers of the same names on all."""
    expected = parallel.map_resumable(_square, list(range(10)), tmp_path / "one", chunk_size=3)
    run, names = _as_processes(monkeypatch, 2)
    tallies = {0: {}, 1: {}}
    results = run(
        lambda i: parallel.map_resumable(_square, list(range(10)), tmp_path / "two", chunk_size=3, tally=tallies[i])
    )
    assert results[0] == results[1] == expected
    assert tallies == {i: {"chunks": 4, "mine": 2, "computed": 2} for i in (0, 1)}
    assert names[0] == names[1] and len(names[0]) == 2
    for i in range(4):  # the parts are the same bytes as one process's
        part = f"part-{i:06d}.jsonl"
        assert (tmp_path / "two" / part).read_bytes() == (tmp_path / "one" / part).read_bytes()
    # A rerun finds every part finished: nothing computed, the same result.
    tallies = {0: {}, 1: {}}
    results = run(
        lambda i: parallel.map_resumable(_square, list(range(10)), tmp_path / "two", chunk_size=3, tally=tallies[i])
    )
    assert results[0] == expected and tallies[1] == {"chunks": 4, "mine": 2, "computed": 0}


def test_a_stage_of_process_0_alone_is_not_split(tmp_path, monkeypatch):
    """Inside a stage that is not all_processes, process 0 runs alone: its maps take every
    chunk and wait at no barrier of theirs; an all_processes stage sees every process."""
    seen = {}

    def record(name):
        def run(config, workdir):
            seen.setdefault(name, []).append(pipeline.processes())
            parallel.map_resumable(_square, list(range(5)), workdir / name, chunk_size=2)
            return {}

        return run

    stages = (
        pipeline.Stage("alone", record("alone"), ("seed",)),
        pipeline.Stage("shared", record("shared"), ("seed",), all_processes=True),
    )
    run, names = _as_processes(monkeypatch, 2)
    run(lambda i: pipeline.run_stages(tiny_config(), tmp_path, stages))
    assert seen["alone"] == [(0, 1)]
    assert sorted(seen["shared"]) == [(0, 2), (1, 2)]
    assert names[0] == names[1]
    assert not any("alone" in name for name in names[0] if name.startswith("parallel"))


def test_a_field_added_at_its_neutral_value_keeps_every_key():
    """A section that gains a field changes the keys of every stage reading it (and so retrains
    them) unless the stage declares the field neutral at the value that reproduces it."""
    import dataclasses

    config = tiny_config()
    before = pipeline.stage_keys(config, ASR.stages(config))

    def grown(value, neutral=True):
        changed = tiny_config()
        with changed.unlocked():
            changed.teacher.new_option = value  # read by the teachers' and multi-condition stages
            changed.decode.new_option = value  # read by every evaluation stage
        stages = ASR.stages(changed)
        if neutral:
            declared = (("teacher.new_option", "off"), ("decode.new_option", "off"))
            stages = tuple(dataclasses.replace(s, neutral=declared) for s in stages)
        return pipeline.stage_keys(changed, stages)

    assert grown("off") == before
    on = grown("on")
    assert on["teacher_ce"] != before["teacher_ce"] and on["student_seq"] != before["student_seq"]
    assert on["gmm"] != before["gmm"] and on["corpus"] == before["corpus"]
    # A stage that names the new field itself (not its section) keys it the same way.
    stage = pipeline.Stage("s", lambda c, w: {}, ("seed",))
    named = dataclasses.replace(
        stage, config_keys=("seed", "teacher.new_option"), neutral=(("teacher.new_option", "off"),)
    )
    key = pipeline.stage_keys(config, (stage,))["s"]
    config_off, config_on = (tiny_config() for _ in range(2))
    for c, value in ((config_off, "off"), (config_on, "on")):
        with c.unlocked():
            c.teacher.new_option = value
    assert pipeline.stage_keys(config_off, (named,))["s"] == key != pipeline.stage_keys(config_on, (named,))["s"]
    assert grown("off", neutral=False)["teacher_ce"] != before["teacher_ce"]  # the problem it solves
