"""results.json: WER per system and test condition (the contract in DESIGN.md).

Every scoring stage merges its rows here; the file is rewritten atomically so stages
running one after another never lose each other's results. The runner keeps it to the
systems of the experiment as now configured (tsasr.pipeline): a stage that starts afresh
drops its old rows, and rows no current stage produced are removed at the end of a run.
"""

from __future__ import annotations

import json
import pathlib

from tsasr.hmm import io as hmm_io

REFERENCE_SYSTEMS = ("teacher_seq", "teacher_ce")


def update_results(
    workdir: pathlib.Path, system: str, wer_by_condition: dict[str, float], extra: dict | None = None
) -> dict:
    """Merges `system`'s WERs (percent, per condition) and `extra` fields into
    WORKDIR/results.json, recomputes relative_to_teacher, and returns the whole table."""
    path = pathlib.Path(workdir) / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    systems = results.setdefault("systems", {})
    entry = systems.setdefault(system, {})
    entry.setdefault("wer", {}).update({k: float(v) for k, v in wer_by_condition.items()})
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(entry.get(key), dict):
            entry[key].update(value)
        else:
            entry[key] = value
    results["relative_to_teacher"] = relative_to_teacher(systems)
    hmm_io.write_json(path, results)
    return results


def remove_systems(workdir: pathlib.Path, keep=None, drop=()) -> list[str]:
    """Removes from WORKDIR/results.json the systems in `drop` and, when `keep` is given, every
    system not in it; recomputes relative_to_teacher. Returns the removed names (sorted)."""
    path = pathlib.Path(workdir) / "results.json"
    if not path.exists():
        return []
    results = json.loads(path.read_text())
    systems = results.get("systems", {})
    removed = sorted(s for s in systems if s in drop or (keep is not None and s not in keep))
    if removed:
        for name in removed:
            del systems[name]
        results["relative_to_teacher"] = relative_to_teacher(systems)
        hmm_io.write_json(path, results)
    return removed


def relative_to_teacher(systems: dict) -> dict:
    """system -> condition -> relative WER change (percent) against teacher_seq, or
    teacher_ce before sequence training exists; empty when neither has been scored."""
    reference = next((systems[s]["wer"] for s in REFERENCE_SYSTEMS if s in systems and systems[s].get("wer")), None)
    if reference is None:
        return {}
    table = {}
    for name, entry in systems.items():
        rows = {
            c: 100.0 * (w - reference[c]) / reference[c] for c, w in entry.get("wer", {}).items() if reference.get(c)
        }
        if rows:
            table[name] = rows
    return table
