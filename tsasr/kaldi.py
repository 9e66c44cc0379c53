"""The Kaldi wheels that share OpenFst, imported in the one order that works, and the
conversions between kaldifst objects and tsasr.fst's arrays.

kaldi_hmm_gmm must be imported before kaldifst, kaldilm and kaldi_decoder: importing any
of those first makes a later `import kaldi_hmm_gmm` hang (the wheels share OpenFst
symbols and the second registration deadlocks). So tsasr never imports these four
directly: it takes them from here (`from tsasr.kaldi import kaldifst`), which an import
sorter cannot reorder. kaldialign, kaldi_native_fbank, kaldingram and kaldiio do not take
part and are imported as usual.

kaldifst does composition, context expansion, determinisation and minimisation in C++;
the edits it has no operation for (relabelling, adding HMM self-loops, projecting) are
done on whole arrays of arcs (tsasr.fst.Arcs), much faster than iterating arcs through
the Python bindings. The round trip goes through OpenFst's text format.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile

# pylint: disable=wrong-import-order,ungrouped-imports
import kaldi_hmm_gmm  # isort: skip  (first; see the module docstring)
import kaldifst  # isort: skip
import kaldi_decoder  # isort: skip
import kaldilm  # isort: skip
import numpy as np

from tsasr import fst as fst_lib

__all__ = [
    "kaldi_hmm_gmm",
    "kaldifst",
    "kaldi_decoder",
    "kaldilm",
    "to_arcs",
    "from_arcs",
    "linear_path",
    "native_stderr_to_log",
]


@contextlib.contextmanager
def native_stderr_to_log(logger: logging.Logger, level: int = logging.DEBUG):
    """Runs the block with file descriptor 2 sent to a temporary file, then logs each of its
    lines through `logger`: Kaldi's C++ progress lines (kaldilm's "Processing 3-grams",
    ...) then follow the log's level and handlers instead of landing raw in a redirected log."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode("utf-8", errors="replace").splitlines():
                if line.strip():
                    logger.log(level, "%s", line.rstrip())


def to_arcs(fst) -> fst_lib.Arcs:
    """Arrays of a kaldifst StdVectorFst (or Lattice: the two costs are summed)."""
    arcs = fst_lib.read_text(str(fst))
    # + 0.0 turns a printed -0 into 0, so from_arcs writes the same text back.
    arcs.cost += 0.0
    arcs.final_costs += 0.0
    return arcs


def from_arcs(arcs: fst_lib.Arcs) -> kaldifst.StdVectorFst:
    """A kaldifst StdVectorFst from arrays (arcs of the start state are written first, as
    the text format takes the first line's source as the start state)."""
    order = np.argsort(arcs.src != arcs.start, kind="stable")
    lines = [
        f"{s} {d} {i} {o} {c:.6g}"
        for s, d, i, o, c in zip(
            arcs.src[order].tolist(),
            arcs.dst[order].tolist(),
            arcs.ilabel[order].tolist(),
            arcs.olabel[order].tolist(),
            arcs.cost[order].tolist(),
        )
    ]
    finals = [f"{s} {c:.6g}" for s, c in zip(arcs.final_states.tolist(), arcs.final_costs.tolist())]
    if not lines:
        finals.sort(key=lambda line: int(line.split()[0]) != arcs.start)
        if not finals or int(finals[0].split()[0]) != arcs.start:
            fst = kaldifst.StdVectorFst()
            for _ in range(max(arcs.num_states, 1)):
                fst.add_state()
            fst.start = arcs.start
            for s, c in zip(arcs.final_states.tolist(), arcs.final_costs.tolist()):
                fst.set_final(state=s, weight=c)
            return fst
    return kaldifst.compile(s="\n".join(lines + finals) + "\n", acceptor=False)


def linear_path(lattice) -> list[tuple[int, int]]:
    """(ilabel, olabel) of every arc of a linear FST such as a decoder's best path, in
    order from the start state."""
    arcs = fst_lib.read_text(str(lattice))
    columns = (arcs.src.tolist(), arcs.dst.tolist(), arcs.ilabel.tolist(), arcs.olabel.tolist())
    next_arc = {s: (d, i, o) for s, d, i, o in zip(*columns)}  # the last arc of each state, as before
    path, state = [], arcs.start
    for _ in range(len(next_arc)):
        arc = next_arc.get(state)
        if arc is None:
            break
        path.append((arc[1], arc[2]))
        state = arc[0]
    return path
