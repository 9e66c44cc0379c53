import json
import subprocess
import sys

import pytest

from tsasr import config as config_lib
from tsasr import run

from conftest import EXPERIMENT, ROOT


def test_experiment_config_is_locked_and_named():
    config = config_lib.experiment_config(EXPERIMENT)
    assert config.name == "top20_T2"
    with pytest.raises(AttributeError):
        config.new_field = 1


def test_overrides_are_parsed_to_the_field_type():
    config = config_lib.experiment_config(
        EXPERIMENT,
        overrides=[
            "--config.corpus.hours=2",
            "--config.noisify.snr_db=(5, 15)",
            "--config.corpus.source=manifest",
            "--config.seed=7",
        ],
    )
    assert config.corpus.hours == 2.0 and isinstance(config.corpus.hours, float)
    assert config.noisify.snr_db == (5.0, 15.0)
    assert config.corpus.source == "manifest"
    assert config.seed == 7


def test_unknown_override_fails_with_suggestion():
    with pytest.raises(KeyError, match="did you mean noisify.snr_db"):
        config_lib.experiment_config(EXPERIMENT, overrides=["--config.noisify.snr_dB=3"])
    with pytest.raises(ValueError, match="cannot parse .abc. as int"):
        config_lib.experiment_config(EXPERIMENT, overrides=["--config.seed=abc"])


def test_runner_rejects_typo_with_exit_code_2(capsys, tmp_path):
    assert run.main([str(EXPERIMENT), "--workdir", str(tmp_path), "--config.corpus.hourz=1"]) == 2
    assert "unknown config field 'corpus.hourz'" in capsys.readouterr().err


def test_tiny_shrinks_the_corpus():
    assert config_lib.experiment_config(EXPERIMENT, tiny_run=True).corpus.hours < 0.1


def test_cli_writes_config_json_and_stops_where_told(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tsasr.run",
            str(EXPERIMENT),
            "--tiny",
            "--until",
            "noise",
            "--workdir",
            str(tmp_path),
            "--config.workers=1",
            "--config.noise.train_minutes=0.2",
            "--config.noise.test_minutes=0.2",
            "--config.corpus.hours=0.01",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["noise"]["train_minutes"] == 0.2 and saved["name"] == "top20_T2"
    assert (tmp_path / "noise" / "train.jsonl").exists()
    assert not (tmp_path / "noisy").exists()


def test_missing_data_stops_the_run_before_any_stage_with_one_line_each(tmp_path):
    """A missing dev manifest and a misspelt noise directory: both named, exit 2, no traceback,
    nothing prepared (not after two splits were validated)."""
    train = tmp_path / "train.jsonl"
    train.write_text('{"id": "u1", "audio": "u1.wav", "text": "hi"}\n')
    args = [f"--config.corpus.manifests.{split}={train}" for split in ("train_labelled", "train_unlabelled", "test")]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tsasr.run",
            str(EXPERIMENT),
            "--workdir",
            str(tmp_path / "work"),
            "--config.corpus.source=manifest",
            *args,
            f"--config.corpus.manifests.dev={tmp_path / 'dev.jsonl'}",
            "--config.noise.source=musan",
            f"--config.noise.musan_dir={tmp_path / 'musn'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert lines == [
        f"error: {tmp_path / 'dev.jsonl'}: corpus.manifests.dev not found",
        f"error: {tmp_path / 'musn'}: noise.musan_dir is not a directory",
    ]
    assert not (tmp_path / "work" / "corpus").exists()


def test_the_log_says_each_thing_once(tmp_path):
    """A root handler left by a library import (orbax adds one) does not double the runner's lines."""
    import logging

    logging.getLogger().addHandler(logging.StreamHandler())
    try:
        run.setup_logging(tmp_path)
        logging.getLogger("tsasr.test").info("once")
        assert (tmp_path / "run.log").read_text().count("once") == 1
        assert len(logging.getLogger().handlers) == 2  # stderr and run.log
    finally:
        for handler in list(logging.getLogger().handlers):
            logging.getLogger().removeHandler(handler)
            handler.close()


def test_a_networks_seed_is_the_runs_until_it_sets_its_own():
    from tsasr.train.config import network_seed

    assert [network_seed(s, 0) for s in (0, 7)] == [0, 7]
    drawn = [network_seed(run_seed, s) for run_seed in (0, 1) for s in range(1, 26)]
    assert len(set(drawn)) == len(drawn)  # another network seed, or another run, gives another stream
    assert drawn == [network_seed(run_seed, s) for run_seed in (0, 1) for s in range(1, 26)]
    assert all(0 <= s < 2**32 for s in drawn)  # a valid jax.random.PRNGKey seed
