"""Shared fixtures: one tiny built-in corpus, noise set and noisy data per test session."""

from __future__ import annotations

import atexit
import os
import pathlib
import shutil
import tempfile

# One persistent compilation cache for the whole test session, this process and every process
# a test starts (they inherit the environment): many tests compile the same steps (the tiny
# recipe's models, the toy classifier) in fresh processes, and a cache hit is the executable a
# compilation would make, bit for bit. Fresh per session, so no run reads another's entries;
# set before JAX is imported, which reads these variables once.
_COMPILATION_CACHE = tempfile.mkdtemp(prefix="tsasr-tests-jax-cache-")
atexit.register(shutil.rmtree, _COMPILATION_CACHE, ignore_errors=True)
os.environ["JAX_COMPILATION_CACHE_DIR"] = _COMPILATION_CACHE
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"

import jax  # noqa: E402
import pytest  # noqa: E402

from tsasr import config as config_lib  # noqa: E402
from tsasr import recipe as recipe_lib  # noqa: E402

# Tests check algorithms against float32/float64 references: on a GPU, multiply in full
# float32 rather than XLA's default TF32 (a no-op on the CPU).
jax.config.update("jax_default_matmul_precision", "float32")
jax.config.update("jax_compilation_cache_dir", _COMPILATION_CACHE)  # were JAX imported before this file
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)

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
