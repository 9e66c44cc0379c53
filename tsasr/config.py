"""Experiment configs: loading experiment files, their recipe's --tiny shrink, overrides.

An experiment is a `.py` file whose `get_config()` returns a locked ConfigDict, usually its
recipe's `base_config()` (e.g. tsasr.recipes.asr.base_config) with a few fields changed;
`config.recipe` names the recipe. Command-line overrides (`--config.noisify.snr_db=0,10`)
must name an existing field; a typo fails with the closest names.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import pathlib
import types
import warnings

import ml_collections

from tsasr import recipe as recipe_lib


def base_config() -> ml_collections.ConfigDict:
    """Deprecated: the `asr` recipe's base config; import tsasr.recipes.asr.base_config instead.

    Kept so that experiment files written before recipes existed keep working.
    """
    warnings.warn(
        "tsasr.config.base_config is the asr recipe's; import it from tsasr.recipes.asr",
        DeprecationWarning,
        stacklevel=2,
    )
    return recipe_lib.load("asr").base_config()


def load_experiment(path: str | pathlib.Path) -> types.ModuleType:
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"experiment file not found: {path}")
    spec = importlib.util.spec_from_file_location(f"tsasr_experiment_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise AttributeError(f"{path}: an experiment file must define get_config()")
    return module


def experiment_config(
    path: str | pathlib.Path, *, tiny_run: bool = False, overrides: list[str] = ()
) -> ml_collections.ConfigDict:
    """Loads an experiment's config, shrinks it for --tiny (its recipe's `tiny`), applies
    overrides, and locks it."""
    module = load_experiment(path)
    config = module.get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise TypeError(f"{path}: get_config() must return an ml_collections.ConfigDict")
    if "recipe" not in config:
        raise KeyError(f"{path}: the config names no recipe (config.recipe, e.g. 'asr')")
    recipe = recipe_lib.load(config.recipe)
    config.unlock()
    if config.get("name", "base") == "base":
        config.name = pathlib.Path(path).stem
    config.lock()
    if tiny_run:
        recipe.tiny(config)
    for override in overrides:
        apply_override(config, override)
    return config


def _flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        keys.append(name)
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(_flat_keys(value, name + "."))
    return keys


def apply_override(config: ml_collections.ConfigDict, override: str) -> None:
    """Applies 'a.b=value' (the value parsed to the existing field's type)."""
    if "=" not in override:
        raise ValueError(f"override {override!r} must look like --config.section.field=value")
    dotted, raw = override.split("=", 1)
    dotted = dotted.removeprefix("--").removeprefix("config.")
    parts = dotted.split(".")
    node = config
    for i, part in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            close = difflib.get_close_matches(dotted, _flat_keys(config), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise KeyError(f"unknown config field {dotted!r}{hint}")
        if i < len(parts) - 1:
            node = node[part]
    current = node[parts[-1]]
    node[parts[-1]] = _parse(raw, current, dotted)


def _parse(raw: str, current, name: str):
    if isinstance(current, bool):
        if raw.lower() in ("true", "1", "yes"):
            return True
        if raw.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"config field {name} is a bool; got {raw!r}")
    if isinstance(current, str):
        return raw
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError) as err:
        raise ValueError(f"config field {name}: cannot parse {raw!r} as {type(current).__name__}") from err
    if isinstance(current, float) and isinstance(value, int):
        value = float(value)
    if isinstance(current, tuple) and isinstance(value, (list, tuple)):
        floats = bool(current) and isinstance(current[0], float)
        value = tuple(float(v) if floats and isinstance(v, int) else v for v in value)
    if current is not None and not isinstance(value, type(current)):
        raise ValueError(f"config field {name} is {type(current).__name__}; got {raw!r}")
    return value
