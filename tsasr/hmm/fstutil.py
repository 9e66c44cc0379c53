"""Moving FSTs between kaldifst and numpy arc arrays.

kaldifst does composition, context expansion, determinisation and minimisation in C++;
the edits it has no operation for (relabelling, adding HMM self-loops, projecting) are
done here on whole arrays of arcs, which is much faster than iterating arcs through the
Python bindings. The round trip goes through OpenFst's text format.
"""

from __future__ import annotations

import dataclasses

import kaldifst
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


def to_arcs(fst) -> Arcs:
    """Arrays of a kaldifst StdVectorFst (or Lattice: the two costs are summed)."""
    text = str(fst)
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
    return float(sum(float(x) for x in field.split(",")))


def from_arcs(arcs: Arcs) -> kaldifst.StdVectorFst:
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
    order from the start state (weights are not parsed: this runs once per alignment)."""
    next_arc = {}
    start = None
    for line in str(lattice).splitlines():
        fields = line.split(None, 4)
        if len(fields) >= 4:
            source = int(fields[0])
            if start is None:
                start = source
            next_arc[source] = (int(fields[1]), int(fields[2]), int(fields[3]))
    path, state = [], start
    for _ in range(len(next_arc)):
        arc = next_arc.get(state)
        if arc is None:
            break
        path.append((arc[1], arc[2]))
        state = arc[0]
    return path


def relabel_inputs(arcs: Arcs, mapping: dict[int, int]) -> Arcs:
    """Input labels replaced through `mapping` (labels not in it are kept)."""
    ilabel = arcs.ilabel.copy()
    for old, new in mapping.items():
        ilabel[arcs.ilabel == old] = new
    return dataclasses.replace(arcs, ilabel=ilabel)
