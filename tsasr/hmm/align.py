"""Viterbi forced alignment over per-utterance alignment graphs.

The search is kaldi-decoder's FasterDecoder on the utterance's H o C o L o transcript
graph, scoring frame t with column (label - 1) of a [frames, graph senones] log-likelihood
matrix: the same decoder as recognition, over only the senones the transcript can reach
(AlignmentGraph.pdfs), so any model that gives per-frame senone scores (GMM now, a
network later) can realign.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tsasr import kaldi
from tsasr.hmm.graph import AlignmentGraph
from tsasr.kaldi import kaldi_decoder


@dataclasses.dataclass
class Alignment:
    """Per-frame senone, phone and HMM state, and the phone segments in context."""

    senones: np.ndarray  # [frames] int32
    phones: np.ndarray  # [frames] int32, centre phone id
    states: np.ndarray  # [frames] int32, HMM state within the phone
    segments: list[tuple[int, int, tuple[int, ...]]]  # (first frame, end frame, window)
    log_likelihood: float


def viterbi(
    graph: AlignmentGraph, loglikes: np.ndarray, acoustic_scale: float, beam: float, retry_beam: float
) -> Alignment | None:
    """Best path through `graph` for log-likelihoods of its senones, [frames, len(graph.pdfs)]
    (or of all senones, [frames, senones]); None on failure (no path reaches the end within
    the beam, even after one retry with `retry_beam`)."""
    if loglikes.shape[1] != len(graph.pdfs):
        loglikes = loglikes[:, graph.pdfs]
    decodable_scores = np.ascontiguousarray(loglikes * acoustic_scale, np.float32)
    for b in (beam, retry_beam):
        decoder = kaldi_decoder.FasterDecoder(graph.fst, kaldi_decoder.FasterDecoderOptions(beam=b))
        decoder.decode(kaldi_decoder.DecodableCtc(decodable_scores))
        if decoder.reached_final():
            ok, best = decoder.get_best_path()
            if ok:
                return _parse(kaldi.linear_path(best), graph, loglikes, len(loglikes))
    return None


def _parse(path, graph, loglikes, num_frames) -> Alignment | None:
    windows = graph.windows
    labels, phones, states, segments = [], [], [], []
    previous_label, state, window = 0, 0, None
    for ilabel, olabel in path:
        if ilabel == 0:
            continue
        if olabel:
            window = tuple(windows[olabel])
            state = 0
            segments.append([len(labels), None, window])
        elif ilabel != previous_label:
            state += 1  # consecutive HMM states never share a senone (different tree roots)
        if window is None:
            return None
        labels.append(ilabel - 1)
        phones.append(window[len(window) // 2])
        states.append(state)
        previous_label = ilabel
    if len(labels) != num_frames:
        return None
    for i, segment in enumerate(segments):
        segment[1] = segments[i + 1][0] if i + 1 < len(segments) else num_frames
    columns = np.asarray(labels, np.int64)
    return Alignment(
        senones=graph.pdfs[columns].astype(np.int32),
        phones=np.asarray(phones, np.int32),
        states=np.asarray(states, np.int32),
        segments=[tuple(s) for s in segments],
        log_likelihood=float(loglikes[np.arange(num_frames), columns].sum()),
    )
