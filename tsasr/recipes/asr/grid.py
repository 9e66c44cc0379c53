"""A k x T sweep's grid: its points, checked, and the config that carries them.

Light on purpose (no JAX): the runner and tsasr.launch read grids before any stage runs.
"""

from __future__ import annotations

import dataclasses
import math

import ml_collections
import numpy as np


@dataclasses.dataclass(frozen=True)
class Member:
    """One student of the grid: the teacher's top `top_k` senones at `temperature`."""

    top_k: int
    temperature: float

    @property
    def system(self) -> str:
        return f"student_ce_k{self.top_k}_T{self.temperature:g}"


def parse_grid(points, stored_k: int | None = None) -> tuple[Member, ...]:
    """Checks a grid (a list of {'top_k': int, 'temperature': float}) and returns its members.

    Raises ValueError naming the point on a missing or unknown field, a k that is not an
    integer in [1, stored_k], a temperature that is not a finite number > 0, or a duplicate.
    """
    if not isinstance(points, (list, tuple)) or not points:
        raise ValueError(
            f"sweep(): the grid must be a non-empty list of {{'top_k', 'temperature'}} points; got {points!r}"
        )
    members, seen = [], set()
    for i, point in enumerate(points):
        if not hasattr(point, "keys") or set(point.keys()) != {"top_k", "temperature"}:
            raise ValueError(f"sweep point {i} {point!r}: needs exactly the fields 'top_k' and 'temperature'")
        k, temperature = point["top_k"], point["temperature"]
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"sweep point {i}: top_k={k!r} must be an integer >= 1")
        if stored_k is not None and k > stored_k:
            raise ValueError(
                f"sweep point {i}: top_k={k} exceeds the k={stored_k} the soft labels were stored at "
                "(raise student.label_top_k)"
            )
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, (int, float, np.number))
            or not math.isfinite(temperature)
            or temperature <= 0
        ):
            raise ValueError(f"sweep point {i}: temperature={temperature!r} must be a finite number > 0")
        member = Member(int(k), float(temperature))
        if member.system in seen:
            raise ValueError(f"sweep point {i}: {member.system} appears twice in the grid")
        seen.add(member.system)
        members.append(member)
    return tuple(members)


def grid_arrays(members) -> dict[str, np.ndarray]:
    """{'top_k': int32 [members], 'temperature': float32 [members]}: the step's per-member inputs."""
    return {
        "top_k": np.asarray([m.top_k for m in members], np.int32),
        "temperature": np.asarray([m.temperature for m in members], np.float32),
    }


def with_grid(config: ml_collections.ConfigDict, points) -> ml_collections.ConfigDict:
    """The config with `sweep.points` set (so config.json and the sweep's stage key hold the grid).

    Raises ValueError on an invalid grid, one whose largest k exceeds student.label_top_k, or
    a student section the sweep cannot honour (online teacher, hard-label mixing), before
    any stage runs.
    """
    if config.student.online or config.student.hard_weight:
        raise ValueError(
            "a sweep trains every point from the stored soft labels alone: set student.online=False "
            f"and student.hard_weight=0 (got online={config.student.online}, hard_weight={config.student.hard_weight})"
        )
    stored_k = config.student.label_top_k or None  # 0 = every senone, known only after alignment
    members = parse_grid(list(points), stored_k=stored_k)
    config = config.copy_and_resolve_references()  # the caller's config keeps its own grid
    with config.unlocked():
        config.sweep = ml_collections.ConfigDict()
        config.sweep.points = [{"top_k": m.top_k, "temperature": m.temperature} for m in members]
    config.lock()
    return config
