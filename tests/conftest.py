"""Shared fixtures: one tiny built-in corpus, noise set and noisy data per test session."""

from __future__ import annotations

import pathlib

import jax
import pytest

from tsasr import config as config_lib
from tsasr import recipe as recipe_lib

# Tests check algorithms against float32/float64 references: on a GPU, multiply in full
# float32 rather than XLA's default TF32 (a no-op on the CPU).
jax.config.update("jax_default_matmul_precision", "float32")

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENT = ROOT / "experiments" / "top20_T2.py"
ASR = recipe_lib.load("asr")


def run_asr(config, workdir, until=None):
    """The asr recipe's stages for `config` up to `until` (tsasr.recipe.run)."""
    return recipe_lib.run(ASR, config, workdir, until=until)


def tiny_config(**overrides):
    config = config_lib.experiment_config(
        EXPERIMENT, tiny_run=True, overrides=[f"{k}={v}" for k, v in overrides.items()]
    )
    with config.unlocked():
        config.workers = 2
    return config


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> tuple[pathlib.Path, object]:
    """A workdir with corpus, noise and noisy data made by the runner's stages on the tiny config."""
    workdir = tmp_path_factory.mktemp("tiny_run")
    config = tiny_config()
    run_asr(config, workdir, until="noisify")
    return workdir, config
