"""FSTs as numpy arrays, and the one reader of OpenFst's text format.

`read_text` parses what OpenFst (and so kaldifst's `str(fst)`) prints: one arc per line,
`src dst ilabel olabel [weight]`, and one line per final state, `state [weight]`; the first
line's source is the start state. Everything else that reads an FST's text (tsasr.kaldi's
conversions, tsasr.losses.fsa's acceptors) goes through it.

Pure numpy: importing this module loads no Kaldi wheel.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Arcs:
    """An FST as arrays: arc i goes src[i] -> dst[i] with ilabel/olabel and a cost."""

    start: int
    src: np.ndarray
    dst: np.ndarray
    ilabel: np.ndarray
    olabel: np.ndarray
    cost: np.ndarray
    final_states: np.ndarray
    final_costs: np.ndarray

    @property
    def num_states(self) -> int:
        candidates = [self.start + 1]
        for a in (self.src, self.dst, self.final_states):
            if len(a):
                candidates.append(int(a.max()) + 1)
        return max(candidates)


def read_text(text: str) -> Arcs:
    """The arcs, final states and start state of an FST in OpenFst text format (start 0
    and no arcs nor final states for an empty text).

    Costs are float64 exactly as printed (a missing weight is 0; a lattice weight
    `graph,acoustic` is the sum of its two costs, graph first).
    """
    src, dst, ilabel, olabel, cost, final_states, final_costs = [], [], [], [], [], [], []
    start = None
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if start is None:
            start = int(fields[0])
        if len(fields) >= 4:
            src.append(int(fields[0]))
            dst.append(int(fields[1]))
            ilabel.append(int(fields[2]))
            olabel.append(int(fields[3]))
            cost.append(_cost(fields[4]) if len(fields) > 4 else 0.0)
        else:
            final_states.append(int(fields[0]))
            final_costs.append(_cost(fields[1]) if len(fields) > 1 else 0.0)
    return Arcs(
        start=0 if start is None else start,
        src=np.array(src, np.int64),
        dst=np.array(dst, np.int64),
        ilabel=np.array(ilabel, np.int64),
        olabel=np.array(olabel, np.int64),
        cost=np.array(cost, np.float64),
        final_states=np.array(final_states, np.int64),
        final_costs=np.array(final_costs, np.float64),
    )


def _cost(field: str) -> float:
    if "," not in field:
        return float(field)
    return float(sum(float(x) for x in field.split(",")))
