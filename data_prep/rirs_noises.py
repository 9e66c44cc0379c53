"""The OpenSLR 28 room responses (RIRS_NOISES) as rooms for noisify: the layout, read in place.

RIRS_NOISES (openslr.org/28) unpacks as
    RIRS_NOISES/real_rirs_isotropic_noises/*.wav    measured responses (some multi-channel), rir_list
    RIRS_NOISES/simulated_rirs/{smallroom,mediumroom,largeroom}/Room*/*.wav, and a rir_list each
    RIRS_NOISES/pointsource_noises/                 noise recordings (not responses; not read here)
where each rir_list line is `--rir-id ID --room-id ROOM RIRS_NOISES/<path>.wav` (paths from the
directory above RIRS_NOISES). A subset without its rir_list is read from its wav files: a
simulated room is the folder its files are in, a measured response is a room of its own.

Rooms, not files, are split between training and the test conditions, so a test mix never
hears a room a training mix heard. This module reads no audio (data_prep.rir reads the
responses), so the up-front checks can use it.
"""

from __future__ import annotations

import hashlib
import logging
import pathlib

log = logging.getLogger(__name__)

# config.noisify.rirs_subsets name -> folder under RIRS_NOISES
SUBSETS = {
    "real": "real_rirs_isotropic_noises",
    "smallroom": "simulated_rirs/smallroom",
    "mediumroom": "simulated_rirs/mediumroom",
    "largeroom": "simulated_rirs/largeroom",
}


def root_of(path: str | pathlib.Path) -> pathlib.Path:
    """The RIRS_NOISES directory: `path` itself, or the RIRS_NOISES directory inside it."""
    path = pathlib.Path(path).expanduser()
    return path / "RIRS_NOISES" if (path / "RIRS_NOISES").is_dir() else path


def _listed(root: pathlib.Path, folder: pathlib.Path, rir_list: pathlib.Path) -> list[tuple[str, pathlib.Path]]:
    entries = []
    for number, line in enumerate(rir_list.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        options = dict(zip(fields[:-1:2], fields[1:-1:2]))
        if "--room-id" not in options or not fields[-1].endswith(".wav"):
            raise ValueError(f"{rir_list}:{number}: expected '--rir-id ID --room-id ROOM PATH.wav', got {line!r}")
        relative = pathlib.Path(fields[-1])
        if relative.parts and relative.parts[0] == "RIRS_NOISES":
            relative = pathlib.Path(*relative.parts[1:])
        path = root / relative
        entries.append((options["--room-id"], path if path.is_file() else folder / relative.name))
    return entries


def responses(root: str | pathlib.Path, subset: str) -> list[tuple[str, pathlib.Path]]:
    """(room id, wav path) of every response of `subset` (a key of SUBSETS) whose file exists."""
    root = root_of(root)
    folder = root / SUBSETS[subset]
    rir_list = folder / "rir_list"
    if rir_list.is_file():
        entries = _listed(root, folder, rir_list)
    else:
        files = sorted(folder.rglob("*.wav"))
        if subset == "real":
            entries = [(f"real-{p.stem}", p) for p in files]
        else:
            entries = [(f"{subset}-{p.parent.name}", p) for p in files]
    present = [(room, path) for room, path in entries if path.is_file()]
    if len(present) < len(entries):
        log.warning("%s: %d of %d listed responses have no file", rir_list, len(entries) - len(present), len(entries))
    return present


def problems(path: str, subsets) -> list[str]:
    """One line per problem with a RIRS_NOISES directory and the subsets asked of it."""
    if not path or not pathlib.Path(path).expanduser().is_dir():
        return [f"{path or '(empty)'}: noisify.rirs_dir is not a directory"]
    root = root_of(path)
    unknown = [s for s in subsets if s not in SUBSETS]
    if unknown or not subsets:
        return [f"noisify.rirs_subsets={tuple(subsets)!r}: each must be one of {', '.join(SUBSETS)}"]
    found, rooms = [], set()
    for subset in subsets:
        try:
            entries = responses(root, subset)
        except ValueError as err:
            found.append(str(err))
            continue
        if not entries:
            found.append(f"{root / SUBSETS[subset]}: no room responses (*.wav) for noisify.rirs_subsets {subset!r}")
        rooms.update(room for room, _ in entries)
    if not found and len(rooms) < 2:
        found.append(f"{root}: {len(rooms)} room(s) in {', '.join(subsets)}; training and test need rooms of their own")
    return found


def split_rooms(root: str | pathlib.Path, subsets, test_percent: float) -> dict[str, dict[str, list[str]]]:
    """{'train': {room: [wav paths]}, 'test': {...}}: about test_percent % of the rooms (at least one,
    never all) held out for the test conditions, chosen by a hash of the room id (so adding rooms
    moves no other room between the sides)."""
    by_room: dict[str, list[str]] = {}
    for subset in subsets:
        for room, path in responses(root, subset):
            by_room.setdefault(room, []).append(str(path))
    if len(by_room) < 2:
        raise ValueError(f"{root_of(root)}: {len(by_room)} room(s) in {', '.join(subsets)}; need two or more")
    order = sorted(by_room, key=lambda room: hashlib.sha1(room.encode()).hexdigest())
    held_out = min(len(order) - 1, max(1, round(len(order) * test_percent / 100)))
    sides = {"test": order[:held_out], "train": order[held_out:]}
    return {side: {room: sorted(by_room[room]) for room in sorted(rooms)} for side, rooms in sides.items()}
