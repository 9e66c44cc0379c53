"""Interop with an existing Kaldi setup: pdf-id alignments in, user HCLG graphs.

Kaldi alignments from `ali-to-pdf` are per-frame pdf ids: exactly our senone ids, so
they import as they are, given the model's pdf count (`am-info` / `tree-info`).
A Kaldi HCLG has transition-id input labels; a `transition-id -> pdf-id` table (from
`show-transitions`, or `TransitionModel.transition_id_to_pdf_array()`) relabels it to
our senone+1 convention so tsasr.decode.decoder can run it on any model's scores.
"""

from __future__ import annotations

import pathlib
from typing import Sequence

import numpy as np

from tsasr import kaldi
from tsasr import workdir as wd
from tsasr.decode.decoder import Graph
from tsasr.kaldi import kaldifst


def import_pdf_alignments(rspecifier: str, num_senones: int, out_dir: pathlib.Path) -> dict:
    """Reads `ark:`/`scp:` per-frame pdf-id alignments (kaldiio) and writes them as
    OUT_DIR/senones.npz, index.json and priors.npy, as the `align` stage does. Utterances
    with ids outside [0, num_senones) are skipped and returned by name."""
    import kaldiio  # pylint: disable=import-outside-toplevel  (optional, 76 ms: only for Kaldi users)

    senones, bad = {}, []
    if rspecifier.startswith("scp:"):
        entries = kaldiio.load_scp(rspecifier[4:]).items()
    else:
        entries = kaldiio.load_ark(rspecifier.removeprefix("ark:"))
    for utt, ali in entries:
        ali = np.asarray(ali, np.int32).reshape(-1)
        if len(ali) == 0 or ali.min() < 0 or ali.max() >= num_senones:
            bad.append(utt)
            continue
        senones[utt] = ali
    counts = np.zeros(num_senones)
    for ali in senones.values():
        counts += np.bincount(ali, minlength=num_senones)
    out_dir = pathlib.Path(out_dir)
    wd.write_npz(out_dir / "senones.npz", senones)
    wd.write_json(out_dir / "index.json", {u: len(a) for u, a in senones.items()})
    wd.write_npy(out_dir / "priors.npy", (counts + 1) / (counts.sum() + num_senones))
    return {"utterances": len(senones), "skipped": bad, "num_senones": num_senones}


def relabel_kaldi_hclg(hclg_path: pathlib.Path, transition_id_to_pdf: Sequence[int], words_txt: pathlib.Path) -> Graph:
    """A Kaldi HCLG with transition-id inputs as a Graph with pdf+1 inputs.

    `transition_id_to_pdf[t]` is the pdf of transition id t (index 0 unused).
    """
    arcs = kaldi.to_arcs(kaldifst.StdVectorFst.read(str(hclg_path)))
    table = np.asarray(transition_id_to_pdf, np.int64)
    emitting = arcs.ilabel > 0
    if np.any(arcs.ilabel[emitting] >= len(table)):
        raise ValueError("HCLG has transition ids beyond the given transition-id -> pdf table")
    arcs.ilabel[emitting] = table[arcs.ilabel[emitting]] + 1
    words = {}
    for line in pathlib.Path(words_txt).read_text().splitlines():
        word, index = line.split()
        words[int(index)] = word
    return Graph(kaldi.from_arcs(arcs), words)
