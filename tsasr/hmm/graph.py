"""Decoding and alignment graphs: G, L, C, H and their composition, with kaldifst.

HCLG input labels are senone ids + 1 (0 is epsilon), so a decoder reads frame t's score
for the label straight from column label - 1 of a [frames, senones] matrix, whatever
model produced it. H is built here from our context dependency (the senone tree), not
from a Kaldi transition model, in Kaldi's mkgraph order: H without self-loops is
composed with CLG, determinised, its disambiguation symbols removed, minimised, and only
then are self-loops added (determinising with self-loops present blows up).

The per-utterance alignment graphs are the same construction with G replaced by the
transcript and outputs projected to context windows, so alignment recovers the phone in
context of every frame.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import logging
import math
import pathlib
import re
from typing import Sequence

import numpy as np
from kaldingram import train as ngram_train

from tsasr import kaldi
from tsasr import workdir as wd
from tsasr.fst import Arcs
from tsasr.hmm.context import ContextDependency
from tsasr.hmm.lexicon import Lexicon, lexicon_fst
from tsasr.kaldi import kaldifst, kaldilm, native_stderr_to_log

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class HmmCosts:
    """Transition costs of every HMM state: geometric durations with `self_loop_prob`,
    scaled like Kaldi's --self-loop-scale (relative to the acoustic scale)."""

    self_loop_prob: float = 0.6
    self_loop_scale: float = 0.1

    @property
    def loop_cost(self) -> float:
        return -math.log(self.self_loop_prob) * self.self_loop_scale

    @property
    def exit_cost(self) -> float:
        return -math.log(1.0 - self.self_loop_prob) * self.self_loop_scale


def h_arcs(ilabel_info: Sequence[Sequence[int]], context: ContextDependency, disambig_offset: int) -> Arcs:
    """H without self-loops: context-window index in, senone+1 per HMM state out... read
    the other way round, as a transducer from senone labels to C's input symbols.

    Disambiguation symbols (ilabel_info entries [-phone], and [0] for #-1) pass through as input labels
    disambig_offset + k so determinisation can still use them; they are removed later.
    """
    src, dst, ilab, olab = [], [], [], []
    next_state = 1
    for index, window in enumerate(ilabel_info):
        if index == 0 or not window:
            continue
        if len(window) == 1 and window[0] <= 0:  # #n disambiguation, or [0] for Kaldi's #-1
            src.append(0), dst.append(0), ilab.append(disambig_offset + index), olab.append(index)
            continue
        centre = window[context.central_position]
        if centre == 0:
            continue  # a window centred on the utterance boundary never carries a phone
        n = context.num_states(centre)
        state = 0
        for s in range(n):
            target = 0 if s == n - 1 else next_state
            src.append(state), dst.append(target)
            ilab.append(context.pdf(window, s) + 1)
            olab.append(index if s == 0 else 0)
            if target:
                next_state += 1
            state = target
    return Arcs(
        start=0,
        src=np.array(src, np.int64),
        dst=np.array(dst, np.int64),
        ilabel=np.array(ilab, np.int64),
        olabel=np.array(olab, np.int64),
        cost=np.zeros(len(src)),
        final_states=np.array([0], np.int64),
        final_costs=np.zeros(1),
    )


def add_self_loops(arcs: Arcs, num_pdfs: int, costs: HmmCosts) -> Arcs:
    """Adds a self-loop after every senone label, splitting states reached by several
    different labels (Kaldi's add-self-loops with reorder=false).

    A state entered only by label l gets a loop on l and pays the exit cost on leaving. A
    state entered by several labels (or also by epsilon, or the start state) gets one copy
    per label, each with its own loop and the state's outgoing arcs; the original keeps
    the non-emitting entries.
    """
    num_states = arcs.num_states
    emitting = (arcs.ilabel >= 1) & (arcs.ilabel <= num_pdfs)
    other_entry = np.zeros(num_states, bool)
    other_entry[arcs.dst[~emitting]] = True
    other_entry[arcs.start] = True
    entering: dict[int, set[int]] = {}
    for d, label in zip(arcs.dst[emitting].tolist(), arcs.ilabel[emitting].tolist()):
        entering.setdefault(d, set()).add(label)
    final = dict(zip(arcs.final_states.tolist(), arcs.final_costs.tolist()))
    order = np.argsort(arcs.src, kind="stable")
    bounds = np.searchsorted(arcs.src[order], np.arange(num_states + 1))

    # (state, label) -> the state that loops on label after entering `state` with it.
    target: dict[tuple[int, int], int] = {}
    src, dst = [arcs.src], [arcs.dst]
    ilabel, olabel, cost = [arcs.ilabel], [arcs.olabel], [arcs.cost.copy()]
    loops = []  # (state, label)
    new_finals = {}
    next_state = num_states
    for state, labels in entering.items():
        outgoing = order[bounds[state] : bounds[state + 1]]
        if len(labels) == 1 and not other_entry[state]:
            (label,) = labels
            target[(state, label)] = state
            cost[0][outgoing] += costs.exit_cost
            loops.append((state, label))
            if state in final:
                new_finals[state] = final[state] + costs.exit_cost
            continue
        for label in sorted(labels):
            copy = next_state
            next_state += 1
            target[(state, label)] = copy
            loops.append((copy, label))
            src.append(np.full(len(outgoing), copy, np.int64))
            dst.append(arcs.dst[outgoing])
            ilabel.append(arcs.ilabel[outgoing])
            olabel.append(arcs.olabel[outgoing])
            cost.append(arcs.cost[outgoing] + costs.exit_cost)
            if state in final:
                new_finals[copy] = final[state] + costs.exit_cost
    loop_states = np.array([s for s, _ in loops], np.int64)
    loop_labels = np.array([label for _, label in loops], np.int64)
    src = np.concatenate(src + [loop_states])
    dst = np.concatenate(dst + [loop_states])
    ilabel = np.concatenate(ilabel + [loop_labels])
    olabel = np.concatenate(olabel + [np.zeros(len(loops), np.int64)])
    cost = np.concatenate(cost + [np.full(len(loops), costs.loop_cost)])
    # Point every emitting arc (originals and copies, not the loops) at its label's state.
    redirect = np.flatnonzero((ilabel >= 1) & (ilabel <= num_pdfs))[: -len(loops) or None]
    dst = dst.copy()
    dst[redirect] = [target[(d, label)] for d, label in zip(dst[redirect].tolist(), ilabel[redirect].tolist())]
    final.update(new_finals)
    return Arcs(
        start=arcs.start,
        src=src,
        dst=dst,
        ilabel=ilabel,
        olabel=olabel,
        cost=cost,
        final_states=np.array(list(final), np.int64),
        final_costs=np.array(list(final.values()), np.float64),
    )


def _compose(a: kaldifst.StdVectorFst, b: kaldifst.StdVectorFst) -> kaldifst.StdVectorFst:
    kaldifst.arcsort(a, sort_type="olabel")
    kaldifst.arcsort(b, sort_type="ilabel")
    return kaldifst.compose(a, b)


def train_lm_arpa(sentences: Sequence[Sequence[str]], order: int) -> str:
    """Kneser-Ney n-gram LM (kaldingram, SRILM-compatible) in ARPA format."""
    # kaldingram draws tqdm bars on stderr; they would drown the stage log. (TQDM_DISABLE in the
    # environment does not reach them: tqdm reads it once, when it is imported.)
    bars = ngram_train.tqdm
    ngram_train.tqdm = functools.partial(bars, disable=True)
    try:
        return _train_lm_arpa(ngram_train, sentences, order)
    finally:
        ngram_train.tqdm = bars


def _train_lm_arpa(ngram_train, sentences, order):
    counts = ngram_train.NgramCounts(order)
    for words in sentences:
        counts.add_raw_counts_from_line(" ".join(words))
    counts.cal_discounting_constants()
    counts.cal_f()
    counts.cal_bow()
    out = io.StringIO()
    counts.print_as_arpa(fout=out)
    return out.getvalue()


_SENTENCE_MARKS = ("<s>", "</s>")


def restrict_arpa(text: str, vocabulary: set[str]) -> tuple[str, list[str]]:
    """An ARPA LM's text with its words lower-cased (as transcripts are) and every n-gram that holds
    a word outside `vocabulary` left out; returns (ARPA text, the words left out).

    What remains is what the decoder can say: arpa2fst needs every word in the symbol table. An
    n-gram kept has its prefix and suffix kept too (they hold a subset of its words), so the
    back-off structure stays valid; the probability mass of the left-out words is simply lost,
    as Kaldi's arpa2fst loses it when it skips out-of-table n-grams. Of n-grams that lower-casing
    makes equal, the first is kept.
    """
    sections: dict[int, list[str]] = {}
    order, seen, dropped = None, set(), set()
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        header = re.fullmatch(r"\\(\d+)-grams:", line)
        if header:
            order, seen = int(header[1]), set()
            sections[order] = []
            continue
        if order is None or not line:
            continue
        if line == "\\end\\":
            order = None
            continue
        fields = line.split()
        if len(fields) < order + 1:
            raise ValueError(f"ARPA line {number}: an {order}-gram needs a log probability and {order} words: {line!r}")
        words = [w if w in _SENTENCE_MARKS else w.lower() for w in fields[1 : order + 1]]
        outside = [w for w in words if w not in vocabulary and w not in _SENTENCE_MARKS]
        if outside:
            dropped.update(outside)
            continue
        if tuple(words) not in seen:
            seen.add(tuple(words))
            sections[order].append(" ".join([fields[0], *words, *fields[order + 1 :]]))
    if not any(line.split()[1] not in _SENTENCE_MARKS for line in sections.get(1, [])):
        raise ValueError("no word of the ARPA LM is in the decoding vocabulary")
    out = ["", "\\data\\", *(f"ngram {n}={len(sections[n])}" for n in sorted(sections))]
    for n in sorted(sections):
        out += ["", f"\\{n}-grams:", *sections[n]]
    out += ["", "\\end\\", ""]
    return "\n".join(out), sorted(dropped)


def arpa_words(text: str) -> set[str]:
    """The words (lower-cased, without <s> and </s>) of an ARPA LM's unigrams."""
    words, inside = set(), False
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("\\"):
            inside = line == "\\1-grams:"
            continue
        fields = line.split()
        if inside and len(fields) >= 2 and fields[1] not in _SENTENCE_MARKS:
            words.add(fields[1].lower())
    return words


def grammar_fst(arpa_path: pathlib.Path, words_txt: pathlib.Path) -> kaldifst.StdVectorFst:
    """G from an ARPA file; back-off arcs carry #0 on the input, as L expects."""
    with native_stderr_to_log(log):  # arpa2fst narrates its progress on fd 2
        text = kaldilm.arpa2fst(input_arpa=str(arpa_path), disambig_symbol="#0", read_symbol_table=str(words_txt))
    return kaldifst.compile(s=text, acceptor=False)


def build_hclg(
    lexicon: Lexicon, grammar: kaldifst.StdVectorFst, context: ContextDependency, costs: HmmCosts, silence_prob: float
) -> kaldifst.StdVectorFst:
    """HCLG with senone+1 input labels and word outputs, determinised and minimised."""
    lg = _compose(lexicon_fst(lexicon, silence_prob, disambig=True), grammar)
    kaldifst.determinize_star(lg, use_log=True)
    kaldifst.minimize_encoded(lg)
    clg, ilabel_info = kaldifst.compose_context(
        disambig_syms=lexicon.disambig_phone_ids,
        context_width=context.context_width,
        central_position=context.central_position,
        ifst=lg,
    )
    disambig_offset = context.num_pdfs + 1
    h = kaldi.from_arcs(h_arcs(ilabel_info, context, disambig_offset))
    hclga = _compose(h, clg)
    kaldifst.determinize_star(hclga, use_log=True)
    arcs = kaldi.to_arcs(hclga)
    arcs.ilabel[arcs.ilabel > context.num_pdfs] = 0  # disambiguation symbols have done their job
    hclga = kaldi.from_arcs(arcs)
    kaldifst.minimize_encoded(hclga)
    hclg = kaldi.from_arcs(add_self_loops(kaldi.to_arcs(hclga), context.num_pdfs, costs))
    kaldifst.arcsort(hclg, sort_type="ilabel")
    return hclg


@dataclasses.dataclass
class AlignmentGraph:
    """One utterance's alignment graph; its outputs index `windows` (phones in context).

    Its input labels are compact: label l stands for senone pdfs[l - 1], so the aligner
    scores only the few dozen senones the transcript can reach, not the whole inventory.
    """

    fst: kaldifst.StdVectorFst
    windows: list[list[int]]
    pdfs: np.ndarray  # [senones in the graph] int64, sorted


def alignment_graph(
    lexicon_no_disambig: kaldifst.StdVectorFst, word_ids: Sequence[int], context: ContextDependency, costs: HmmCosts
) -> AlignmentGraph:
    """H o C o L o transcript, with C's phone windows as outputs."""
    words = kaldifst.make_linear_acceptor(list(word_ids))
    lw = _compose(lexicon_no_disambig, words)
    clw, ilabel_info = kaldifst.compose_context(
        disambig_syms=[], context_width=context.context_width, central_position=context.central_position, ifst=lw
    )
    arcs = kaldi.to_arcs(clw)
    arcs.olabel = arcs.ilabel.copy()  # project onto the phone windows
    h = kaldi.from_arcs(h_arcs(ilabel_info, context, context.num_pdfs + 1))
    hclw = _compose(h, kaldi.from_arcs(arcs))
    arcs = add_self_loops(kaldi.to_arcs(hclw), context.num_pdfs, costs)
    emitting = arcs.ilabel > 0
    pdfs = np.unique(arcs.ilabel[emitting]) - 1
    arcs.ilabel[emitting] = np.searchsorted(pdfs, arcs.ilabel[emitting] - 1) + 1
    return AlignmentGraph(fst=kaldi.from_arcs(arcs), windows=[list(w) for w in ilabel_info], pdfs=pdfs)


def write_fst(path: pathlib.Path, fst: kaldifst.StdVectorFst) -> None:
    with wd.atomic_path(path) as tmp:
        fst.write(str(tmp))


def fst_size(fst) -> dict[str, int]:
    return {"states": int(fst.num_states), "arcs": int(sum(fst.num_arcs(s) for s in range(fst.num_states)))}
