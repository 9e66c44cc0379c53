"""results.json: every evaluated system's metrics per test condition (DESIGN.md, "results.json").

    {"systems": {system: {metric: {condition: value},          e.g. "wer": {"clean": 9.2}
                          "ci": {metric: {condition: [low, high]}},   95 % intervals
                          ...                                  evaluator details (counts, p-values)
                          }},
     "metrics": {metric: {"lower_is_better": bool}},
     "relative_to": {reference: {metric: {system: {condition: percent}}}},
     "relative_to_teacher": {system: {condition: percent}},    the recipe's primary reference, primary metric
     "conditions": {condition: {fact: value}}}                  facts about a test set (e.g. its OOV rate)

Evaluation stages merge their system's rows (`update_results`); the runner derives the
relative changes from the recipe's report spec (`add_relative`) and keeps the file to the
systems of the experiment as now configured (`remove_systems`). Every write is atomic, so
stages running one after another never lose each other's rows.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterable

from tsasr import workdir as wd

FILE = "results.json"


def read(workdir: pathlib.Path) -> dict:
    path = pathlib.Path(workdir) / FILE
    return json.loads(path.read_text()) if path.exists() else {}


def update_results(workdir: pathlib.Path, system: str, values: dict[str, dict[str, float]], extra: dict | None = None):
    """Merges `system`'s metric values ({metric: {condition: value}}) and `extra` fields (dicts
    merged one level deep) into WORKDIR/results.json; returns the whole table."""
    results = read(workdir)
    entry = results.setdefault("systems", {}).setdefault(system, {})
    for metric, by_condition in values.items():
        entry.setdefault(metric, {}).update({c: float(v) for c, v in by_condition.items()})
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(entry.get(key), dict):
            for inner, item in value.items():
                if isinstance(item, dict) and isinstance(entry[key].get(inner), dict):
                    entry[key][inner].update(item)
                else:
                    entry[key][inner] = item
        else:
            entry[key] = value
    wd.write_json(pathlib.Path(workdir) / FILE, results)
    return results


def update_conditions(workdir: pathlib.Path, facts: dict[str, dict]) -> dict:
    """Merges facts about test conditions ({condition: {name: value}}, e.g. utterances, words,
    OOV rate) into WORKDIR/results.json; returns the whole table."""
    results = read(workdir)
    conditions = results.setdefault("conditions", {})
    for condition, values in facts.items():
        conditions.setdefault(condition, {}).update(values)
    wd.write_json(pathlib.Path(workdir) / FILE, results)
    return results


def remove_systems(workdir: pathlib.Path, keep: Iterable[str] | None = None, drop: Iterable[str] = ()) -> list[str]:
    """Removes from WORKDIR/results.json the systems in `drop` and, when `keep` is given, every
    system not in it (their relative rows too). Returns the removed names (sorted)."""
    results = read(workdir)
    systems = results.get("systems", {})
    drop, keep = set(drop), None if keep is None else set(keep)
    removed = sorted(s for s in systems if s in drop or (keep is not None and s not in keep))
    if removed:
        for name in removed:
            del systems[name]
        _drop_relative_rows(results, removed)
        wd.write_json(pathlib.Path(workdir) / FILE, results)
    return removed


def _drop_relative_rows(results: dict, names: list[str]) -> None:
    for by_metric in results.get("relative_to", {}).values():
        for rows in by_metric.values():
            for name in names:
                rows.pop(name, None)
    for name in names:
        results.get("relative_to_teacher", {}).pop(name, None)


def relative_change(systems: dict, reference: str, metric: str) -> dict:
    """system -> condition -> 100 (value - reference) / reference for `metric`; empty when the
    reference has not been scored (a condition whose reference value is 0 is left out)."""
    base = systems.get(reference, {}).get(metric)
    if not base:
        return {}
    table = {}
    for name, entry in systems.items():
        rows = {c: 100.0 * (v - base[c]) / base[c] for c, v in entry.get(metric, {}).items() if base.get(c)}
        if rows:
            table[name] = rows
    return table


def add_relative(workdir: pathlib.Path, references: Iterable[str], metrics: dict[str, bool]) -> dict:
    """Rewrites the relative tables of WORKDIR/results.json: against every scored reference
    system, for every metric of `metrics` ({metric: lower_is_better}); `relative_to_teacher` is
    the first scored reference's table of the first metric. Returns the whole table."""
    results = read(workdir)
    if not results:
        return results
    systems = results.get("systems", {})
    references = [r for r in references if systems.get(r)]
    results["metrics"] = {m: {"lower_is_better": bool(lower)} for m, lower in metrics.items()}
    results["relative_to"] = {
        ref: {m: table for m in metrics if (table := relative_change(systems, ref, m))} for ref in references
    }
    primary = next(iter(metrics), None)
    results["relative_to_teacher"] = results["relative_to"][references[0]].get(primary, {}) if references else {}
    wd.write_json(pathlib.Path(workdir) / FILE, results)
    return results
