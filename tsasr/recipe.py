"""The recipe interface: what a recipe package gives the runner.

A recipe is a package (tsasr/recipes/<name>/, or any importable module) whose `RECIPE` is a
`Recipe`: its base config, its `--tiny` shrink, its stages for a given config, and its
report spec. An experiment's config names its recipe (`config.recipe = "asr"`);
`python -m tsasr.run EXPERIMENT.py` asks that recipe for its stages, runs them
(tsasr.pipeline), and renders the report from the recipe's spec.

The core never imports a recipe: `load` finds it by name when a run starts.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import pathlib
from collections.abc import Callable

import ml_collections

from tsasr import pipeline
from tsasr.evaluate import report as report_lib
from tsasr.evaluate import results as results_lib

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    base_config: Callable[[], ml_collections.ConfigDict]  # every field commented; sets config.recipe
    tiny: Callable[[ml_collections.ConfigDict], None]  # shrinks a config in place for a smoke run
    stages: Callable[[ml_collections.ConfigDict], tuple[pipeline.Stage, ...]]  # the chain for this config
    report: report_lib.ReportSpec
    # (config, points) -> config with the grid set: experiments that declare sweep() (optional)
    with_sweep: Callable[[ml_collections.ConfigDict, list], ml_collections.ConfigDict] | None = None
    # config -> one line per problem with the data it names, checked before any stage (optional)
    check: Callable[[ml_collections.ConfigDict], list[str]] | None = None
    # (workdir, system, condition) -> {test item: errors}, where the primary metric is a ratio of
    # sums whose denominator no system changes (WER: word errors over reference words); with it
    # python -m tsasr.seeds bootstraps a change over training seeds and test items together (optional)
    item_errors: Callable[[pathlib.Path, str, str], dict[str, float]] | None = None


def load(name: str) -> Recipe:
    """The recipe `name`: a package under tsasr.recipes, or a dotted module path with a RECIPE."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"config.recipe must name a recipe (e.g. 'asr'); got {name!r}")
    module_name = name if "." in name else f"tsasr.recipes.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name not in (module_name, *_parents(module_name)):
            raise
        raise ValueError(f"unknown recipe {name!r}: no module {module_name}") from None
    recipe = getattr(module, "RECIPE", None)
    if not isinstance(recipe, Recipe):
        raise ValueError(f"recipe module {module_name} has no RECIPE (a tsasr.recipe.Recipe)")
    return recipe


def _parents(module_name: str) -> list[str]:
    parts = module_name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def run(
    recipe: Recipe, config: ml_collections.ConfigDict, workdir: pathlib.Path, until: str | None = None
) -> dict[str, dict]:
    """Runs (or skips) the recipe's stages for `config` up to `until`, then keeps results.json to
    the systems those stages produced as now configured and derives its relative tables.
    Returns the stage report of tsasr.pipeline.run_stages."""
    workdir = pathlib.Path(workdir)
    stages = recipe.stages(config)
    keys = pipeline.stage_keys(config, stages)  # once: a user's data is fingerprinted file by file
    report = pipeline.run_stages(config, workdir, stages=stages, until=until, keys=keys)
    if pipeline.process_index() == 0:
        pipeline.prune_results(config, workdir, stages, keys)
        spec = recipe.report
        results_lib.add_relative(workdir, spec.references, {m.name: m.lower_is_better for m in spec.metrics})
    return report


def write_report(recipe: Recipe, config: ml_collections.ConfigDict, workdir: pathlib.Path) -> str:
    """results.md and plots/ from the recipe's spec; the paper section only where the experiment
    declares `config.paper`."""
    paper = config.get("paper")
    return report_lib.write_report(workdir, recipe.report, paper.to_dict() if paper else None)
