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
import pathlib
from typing import Mapping

import kaldi_decoder
import kaldifst
import numpy as np

from tsasr.hmm import fstutil


@dataclasses.dataclass
class Graph:
  """A decoding graph and its word table."""

  fst: kaldifst.StdVectorFst
  words: dict[int, str]

  @classmethod
  def load(cls, graph_dir: pathlib.Path) -> "Graph":
    graph_dir = pathlib.Path(graph_dir)
    words = {}
    for line in (graph_dir / "words.txt").read_text().splitlines():
      word, index = line.split()
      words[int(index)] = word
    return cls(kaldifst.StdVectorFst.read(str(graph_dir / "HCLG.fst")), words)


def pseudo_log_likelihoods(log_posteriors: np.ndarray, priors: np.ndarray,
                           prior_floor: float = 1e-8) -> np.ndarray:
  """log p(senone | x) - log p(senone): the hybrid model's scaled likelihood."""
  return log_posteriors - np.log(np.maximum(priors, prior_floor))[None, :]


def decode(loglikes_per_utt: Mapping[str, np.ndarray], graph: Graph | pathlib.Path | str,
           acoustic_scale: float = 0.1, beam: float = 13.0, max_active: int = 7000
           ) -> tuple[dict[str, list[str]], list[str]]:
  """Best word sequence per utterance, and the utterances whose search ended without
  reaching a final state (their partial best path is still returned and counted).

  Args:
    loglikes_per_utt: utterance -> [frames, senones] log-likelihoods (or pseudo ones).
    graph: a Graph or a directory with HCLG.fst and words.txt.
    acoustic_scale: multiplies the scores before they meet graph costs.
  """
  if not isinstance(graph, Graph):
    graph = Graph.load(pathlib.Path(graph))
  decoder = kaldi_decoder.FasterDecoder(
      graph.fst, kaldi_decoder.FasterDecoderOptions(beam=beam, max_active=max_active))
  hyps, partial = {}, []
  for utt, loglikes in loglikes_per_utt.items():
    scores = np.ascontiguousarray(np.asarray(loglikes, np.float32) * acoustic_scale)
    decoder.decode(kaldi_decoder.DecodableCtc(scores))
    final = decoder.reached_final()
    ok, best = decoder.get_best_path(use_final_probs=final)
    if not final:
      partial.append(utt)
    if not ok:
      hyps[utt] = []
      continue
    _, _, word_ids, _ = kaldifst.get_linear_symbol_sequence(best)
    hyps[utt] = [graph.words[w] for w in word_ids]
  if partial:
    logging.warning("decode: %d utterances did not reach a final state: %s", len(partial),
                    " ".join(partial[:20]))
  return hyps, partial


def graph_size(graph: Graph) -> dict[str, int]:
  arcs = fstutil.to_arcs(graph.fst)
  return {"states": int(graph.fst.num_states), "arcs": int(len(arcs.src))}
