"""WFST decoding of per-frame senone scores with kaldi-decoder's FasterDecoder.

Any acoustic model plugs in through a [frames, senones] matrix: a network's log
posteriors become pseudo log-likelihoods by subtracting log priors (hybrid decoding);
a GMM's log-likelihoods go in as they are. The graph's input labels are senone + 1
(tsasr.hmm.graph), or a user's Kaldi HCLG relabelled through its pdf mapping
(tsasr.decode.kaldi_interop).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import pathlib
from typing import Mapping

import numpy as np

from tsasr import kaldi
from tsasr.kaldi import kaldi_decoder, kaldifst

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Graph:
    """A decoding graph and its word table (and the directory it was read from, if any)."""

    fst: kaldifst.StdVectorFst
    words: dict[int, str]
    source: pathlib.Path | None = None

    @classmethod
    def load(cls, graph_dir: pathlib.Path) -> "Graph":
        graph_dir = pathlib.Path(graph_dir)
        words = {}
        for line in (graph_dir / "words.txt").read_text().splitlines():
            word, index = line.split()
            words[int(index)] = word
        return cls(kaldifst.StdVectorFst.read(str(graph_dir / "HCLG.fst")), words, graph_dir)


def pseudo_log_likelihoods(log_posteriors: np.ndarray, priors: np.ndarray, prior_floor: float = 1e-8) -> np.ndarray:
    """log p(senone | x) - log p(senone): the hybrid model's scaled likelihood."""
    return log_posteriors - np.log(np.maximum(priors, prior_floor))[None, :]


def decode(
    loglikes_per_utt: Mapping[str, np.ndarray],
    graph: Graph | pathlib.Path | str,
    acoustic_scale: float = 0.1,
    beam: float = 13.0,
    max_active: int = 7000,
    workers: int = 1,
) -> tuple[dict[str, list[str]], list[str]]:
    """Best word sequence per utterance, and the utterances whose search ended without
    reaching a final state (their partial best path is still returned and counted).

    Args:
      loglikes_per_utt: utterance -> [frames, senones] log-likelihoods (or pseudo ones).
      graph: a Graph or a directory with HCLG.fst and words.txt.
      acoustic_scale: multiplies the scores before they meet graph costs.
      workers: decoding processes (a graph read from a directory is needed for more than
        one); the result does not depend on it. Use DecoderPool to decode several sets.
    """
    if not isinstance(graph, Graph):
        graph = Graph.load(pathlib.Path(graph))
    if workers > 1 and graph.source is not None and len(loglikes_per_utt) > 1:
        with DecoderPool(graph.source, beam, max_active, workers) as pool:
            return pool.decode(loglikes_per_utt, acoustic_scale)
    decoder = kaldi_decoder.FasterDecoder(
        graph.fst, kaldi_decoder.FasterDecoderOptions(beam=beam, max_active=max_active)
    )
    results = [
        (utt, *_decode_one(decoder, graph, loglikes, acoustic_scale)) for utt, loglikes in loglikes_per_utt.items()
    ]
    return _collect(results)


def _decode_one(decoder, graph: Graph, loglikes: np.ndarray, acoustic_scale: float) -> tuple[list[str], bool]:
    scores = np.ascontiguousarray(np.asarray(loglikes, np.float32) * acoustic_scale)
    decoder.decode(kaldi_decoder.DecodableCtc(scores))
    final = decoder.reached_final()
    ok, best = decoder.get_best_path(use_final_probs=final)
    if not ok:
        return [], final
    _, _, word_ids, _ = kaldifst.get_linear_symbol_sequence(best)
    return [graph.words[w] for w in word_ids], final


def _collect(results) -> tuple[dict[str, list[str]], list[str]]:
    hyps = {utt: words for utt, words, _ in results}
    partial = [utt for utt, _, final in results if not final]
    if partial:
        log.warning(
            "%d utterances did not reach a final state of the graph within the beam; each is scored with the "
            "words of its best partial path (raise decode.beam to search wider): %s",
            len(partial),
            " ".join(partial[:20]),
        )
    return hyps, partial


class DecoderPool:
    """Decodes on `workers` processes that each read the graph once, for many calls.

    Utterances are decoded independently with the same graph and options, so the result
    is the same for any number of workers. Processes come from a forkserver (never a fork
    of a process that may hold JAX threads).
    """

    def __init__(self, graph_dir: pathlib.Path, beam: float = 13.0, max_active: int = 7000, workers: int = 2):
        self.workers = max(1, int(workers))
        self._pool = None
        if self.workers == 1:  # decode here; no process to start
            _init_worker(str(graph_dir), beam, max_active)
        else:
            ctx = multiprocessing.get_context("forkserver")
            self._pool = ctx.Pool(self.workers, initializer=_init_worker, initargs=(str(graph_dir), beam, max_active))

    def decode(
        self, loglikes_per_utt: Mapping[str, np.ndarray], acoustic_scale: float
    ) -> tuple[dict[str, list[str]], list[str]]:
        items = list(loglikes_per_utt.items())
        if self._pool is None:
            return _collect(_decode_chunk((acoustic_scale, items)))
        # Longest first, dealt round-robin into a few chunks per worker, to balance the load.
        order = sorted(range(len(items)), key=lambda i: -len(items[i][1]))
        num_chunks = min(len(items), 4 * self.workers)
        chunks = [[items[i] for i in order[k::num_chunks]] for k in range(num_chunks)]
        done = {}
        for chunk_results in self._pool.imap_unordered(_decode_chunk, [(acoustic_scale, chunk) for chunk in chunks]):
            done.update((utt, (words, final)) for utt, words, final in chunk_results)
        return _collect([(utt, *done[utt]) for utt, _ in items])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()

    def __enter__(self) -> "DecoderPool":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is not None and self._pool is not None:
            self._pool.terminate()
        self.close()


_WORKER: dict = {}


def _init_worker(graph_dir: str, beam: float, max_active: int) -> None:
    graph = Graph.load(pathlib.Path(graph_dir))
    _WORKER["graph"] = graph
    _WORKER["decoder"] = kaldi_decoder.FasterDecoder(
        graph.fst, kaldi_decoder.FasterDecoderOptions(beam=beam, max_active=max_active)
    )


def _decode_chunk(args):
    acoustic_scale, items = args
    return [
        (utt, *_decode_one(_WORKER["decoder"], _WORKER["graph"], loglikes, acoustic_scale)) for utt, loglikes in items
    ]


def graph_size(graph: Graph) -> dict[str, int]:
    arcs = kaldi.to_arcs(graph.fst)
    return {"states": int(graph.fst.num_states), "arcs": int(len(arcs.src))}
