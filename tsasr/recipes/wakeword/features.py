"""Stage `features`: LFBE and DFT features of every item, clean and noisy, and frame targets.

Conditions: `clean` (as synthesised or recorded) and `noisy` (data_prep.noisify: 1-3 media
noises from reverberant positions in a simulated room, mixed at a drawn SNR; train and dev
items draw training noise, test items the held-out test noise). The mix is advanced by the
talker's direct path, so the clean frame targets hold for the noisy copy.

Targets (per frame, the phone segment under the frame's centre): 0 = silence, 1..J = the wake
word's HMM states (`states_per_phone` equal parts of each wake-word phone), J+1.. = background
monophones (espeak's phone set, as in the training sentences). The filler system maps every
background monophone to one filler target J+1 (`targets_for`).

Features are normalised per dimension with the clean training set's mean and standard
deviation and stored as float16: WORKDIR/features/{split}_{condition}.npz (`<front end>/<id>`,
`targets/<id>` for training items), units.json (target names), norm.npz.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from data_prep import noisify
from tsasr import workdir as wd
from tsasr.audio import io as audio_io
from tsasr.audio import lfbe as lfbe_lib
from tsasr.data import padded
from tsasr.recipes.wakeword import corpus as corpus_lib
from tsasr.recipes.wakeword import frontends

FRONT_ENDS = ("lfbe", "dft")
HOP, WINDOW = 160, 400


def frame_centres(frames: int) -> np.ndarray:
    return (np.arange(frames) * HOP + WINDOW / 2) / corpus_lib.RATE


def frame_of(seconds: float) -> int:
    """The frame whose centre is nearest `seconds`."""
    return max(0, round((seconds * corpus_lib.RATE - WINDOW / 2) / HOP))


def keyword_states(states_per_phone: int) -> int:
    return 8 * states_per_phone


def frame_targets(record: dict, frames: int, units: dict[str, int], states_per_phone: int) -> np.ndarray:
    """Monophone-system targets [frames] of one item (see the module docstring)."""
    centres = frame_centres(frames)
    targets = np.zeros(frames, np.int32)
    for start, end, name in record["phones"]:
        inside = (centres >= start) & (centres < end)
        targets[inside] = units.get(name, 0)
    for p, (start, end) in enumerate(record.get("wake_phones", [])):
        edges = np.linspace(start, end, states_per_phone + 1)
        for k in range(states_per_phone):
            inside = (centres >= edges[k]) & (centres < edges[k + 1])
            targets[inside] = 1 + p * states_per_phone + k
    return targets


def targets_for(background: str, monophone_targets: np.ndarray, num_keyword: int) -> np.ndarray:
    """The targets of a background model: 'monophone' as stored, 'filler' with one filler unit."""
    if background == "monophone":
        return monophone_targets
    if background == "filler":
        return np.where(monophone_targets > num_keyword, num_keyword + 1, monophone_targets).astype(np.int32)
    raise ValueError(f"spotter background must be 'monophone' or 'filler', not {background!r}")


def _noisify_cfg(cfg) -> dict:
    return {
        "num_noises": tuple(cfg.num_noises),
        "kind_weights": dict(cfg.kind_weights),
        "relative_level_db": tuple(cfg.relative_level_db),
        "snr_db": tuple(cfg.snr_db),
        "max_order": int(cfg.max_order),
        "rooms": cfg.rooms.to_dict(),
    }


def _noisy(records, audios, noises, cfg, seed, split) -> dict:
    condition = "test_noisy" if split in ("test", "user") else "train_labelled"
    out = {}
    for r in records:
        rng = noisify.utterance_rng(seed, f"wakeword/{split}", r["id"])
        recipe = noisify.draw_recipe(rng, r, noises, cfg, condition)
        out[r["id"]] = noisify.render(recipe, audios[r["id"]])[0]
    return out


def compute(audios: dict) -> dict[str, dict]:
    """{front end: {id: [frames, dim] float32}} of a dict of 16 kHz waveforms."""
    out = {f: {} for f in FRONT_ENDS}
    items = dict(sorted(audios.items(), key=lambda kv: kv[1].size))
    for batch, (mel, dft, _) in padded.map_padded(
        frontends.features, items, 8, padded.next_power_of_two_times(16 * corpus_lib.RATE)
    ):
        mel, dft = np.asarray(mel), np.asarray(dft)
        for row, (key, samples) in enumerate(zip(batch.ids, batch.lengths)):
            n = lfbe_lib.num_frames(samples)
            out["lfbe"][key], out["dft"][key] = mel[row, :n], dft[row, :n]
    return out


def build(config, workdir: pathlib.Path) -> dict:
    out = workdir / "features"
    spp = int(config.spotter.states_per_phone)
    train = corpus_lib.read(workdir, "train")
    names = sorted({p[2] for r in train for p in r["phones"]} - {"sil"})
    num_keyword = keyword_states(spp)
    units = {"sil": 0, **{n: num_keyword + 1 + i for i, n in enumerate(names)}}
    target_names = ["sil"] + [f"{corpus_lib.WAKE_WORD}_{p}_{k}" for p in range(8) for k in range(spp)] + names
    wd.write_json(out / "units.json", {"targets": target_names, "keyword": list(range(1, num_keyword + 1))})
    cfg = _noisify_cfg(config.noisy)
    noises = {s: corpus_lib.read(workdir, f"noise_{s}") for s in ("train", "test")}
    splits = [s for s in ("train", "dev", "test", "user") if (workdir / "corpus" / f"{s}.jsonl").exists()]
    norm, summary = None, {}
    for split in splits:
        records = corpus_lib.read(workdir, split)
        audios = {r["id"]: audio_io.read_audio(r["audio"]) for r in records}
        conditions = {"clean": audios}
        if split != "user" or config.noisy.user:
            conditions["noisy"] = _noisy(
                records, audios, noises["test" if split in ("test", "user") else "train"], cfg, config.seed, split
            )
        for condition, waves in conditions.items():
            feats = compute(waves)
            if norm is None:  # the clean training set comes first
                norm = {}
                for f in FRONT_ENDS:
                    stacked = np.concatenate(list(feats[f].values()))
                    norm[f"{f}/mean"], norm[f"{f}/std"] = stacked.mean(0), np.maximum(stacked.std(0), 1e-3)
                wd.write_npz(out / "norm.npz", norm)
            arrays = {}
            for f in FRONT_ENDS:
                for key, x in feats[f].items():
                    arrays[f"{f}/{key}"] = ((x - norm[f"{f}/mean"]) / norm[f"{f}/std"]).astype(np.float16)
            if split == "train":
                for r in records:
                    arrays[f"targets/{r['id']}"] = frame_targets(r, feats["lfbe"][r["id"]].shape[0], units, spp)
            wd.write_npz(out / f"{split}_{condition}.npz", arrays)
            summary[f"{split}_{condition}"] = {
                "items": len(records),
                "frames": int(sum(x.shape[0] for x in feats["lfbe"].values())),
            }
    return summary


def load(workdir: pathlib.Path, split: str, condition: str, front_end: str) -> dict[str, np.ndarray]:
    path = workdir / "features" / f"{split}_{condition}.npz"
    if not path.exists():
        return {}
    data = np.load(path)
    prefix = f"{front_end}/"
    return {k[len(prefix) :]: data[k] for k in data.files if k.startswith(prefix)}


def load_targets(workdir: pathlib.Path, split: str, condition: str) -> dict[str, np.ndarray]:
    data = np.load(workdir / "features" / f"{split}_{condition}.npz")
    return {k[8:]: data[k] for k in data.files if k.startswith("targets/")}


def units(workdir: pathlib.Path) -> dict:
    return json.loads((workdir / "features" / "units.json").read_text())
