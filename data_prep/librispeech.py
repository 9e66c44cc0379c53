"""LibriSpeech as a tsasr corpus: manifests from the corpus's own layout.

LibriSpeech (openslr.org/12) unpacks as `<root>/<subset>/<speaker>/<chapter>/` holding
`<speaker>-<chapter>-<utt>.flac` files and one `<speaker>-<chapter>.trans.txt` whose lines are
`<utterance id> <TRANSCRIPT IN CAPITALS>`. Each of tsasr's four splits takes one or more
subsets (config.corpus.librispeech); the manifests written here then go through the same
checks as any user manifest (data_prep.user_corpus), so a missing or broken file is named
and skipped or stops the run, as `corpus.on_bad_input` says.
"""

from __future__ import annotations

import logging
import pathlib

from tsasr.data import manifest

log = logging.getLogger(__name__)


def subsets(value: str) -> list[str]:
    """'train-clean-360,train-other-500' -> the subset names."""
    return [s.strip() for s in value.split(",") if s.strip()]


def read_subset(root: pathlib.Path, subset: str) -> list[dict]:
    """One manifest record per transcribed utterance of `subset` (text lower-cased, the speaker
    from the layout); a transcript line whose audio file is absent is kept for the checks to name."""
    directory = pathlib.Path(root).expanduser() / subset
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: LibriSpeech subset {subset!r} not found")
    records = []
    for transcripts in sorted(directory.glob("*/*/*.trans.txt")):
        speaker = transcripts.parent.parent.name
        for number, line in enumerate(transcripts.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            utt, _, text = line.partition(" ")
            if not text.strip():
                raise ValueError(f"{transcripts}:{number}: a line needs an utterance id and a transcript")
            records.append(
                {
                    "id": utt,
                    "audio": str(transcripts.parent / f"{utt}.flac"),
                    "text": " ".join(text.lower().split()),
                    "speaker": speaker,
                }
            )
    if not records:
        raise ValueError(f"{directory}: no *.trans.txt under <speaker>/<chapter>/")
    return records


def write_manifests(root: str, subsets_by_split: dict[str, str], out: pathlib.Path) -> dict[str, str]:
    """Writes OUT/<split>.jsonl from each split's subsets; returns {split: manifest path}."""
    paths = {}
    for split, names in subsets_by_split.items():
        records = [r for name in subsets(names) for r in read_subset(pathlib.Path(root), name)]
        path = pathlib.Path(out) / f"{split}.jsonl"
        manifest.write_manifest(path, records)
        log.info("librispeech: %s <- %s: %d utterances", split, names, len(records))
        paths[split] = str(path)
    return paths
