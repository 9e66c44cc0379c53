"""Decoder speed: real-time factor of FasterDecoder on one core, and the graph size.

Usage: python bench/decode.py [WORKDIR [ACOUSTIC_SCALE BEAM]]
With a WORKDIR that has run the `align` and `graph` stages, decodes its clean test set
with the triphone GMM's scores (scoring time excluded: only the search is timed), at
acoustic scale 0.1 and beam 13 unless given (the `gmm` stage uses its tuned scale and
decode.gmm_beam).
Without one, builds a small graph and random-walk scores so the search has real work.
Prints one JSON object.
"""

import json
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from tsasr.data.manifest import read_manifest  # noqa: E402
from tsasr.hmm import stages  # noqa: E402
from tsasr.decode import decoder as decoder_lib  # noqa: E402
from tsasr.hmm import gmm as gmm_lib  # noqa: E402


def _workdir_scores(workdir: pathlib.Path):
    records = read_manifest(workdir / "corpus" / "test.jsonl")
    scorer = gmm_lib.GmmScorer(gmm_lib.from_bytes((workdir / "align" / "tri_gmm.pkl").read_bytes()))
    feats = stages.load_features(records)
    return {u: scorer(f) for u, f in feats.items()}, decoder_lib.Graph.load(workdir / "graph")


def _synthetic_scores():
    from tsasr.hmm import context as context_lib, graph as graph_lib, lexicon as lexicon_lib

    rng = np.random.default_rng(0)
    words = "set a timer for ten minutes play some music call my mother turn on the lights".split()
    lexicon = lexicon_lib.build_lexicon(words, g2p=None)
    sentences = [list(rng.choice(words, rng.integers(2, 7))) for _ in range(300)]
    tmp = pathlib.Path(tempfile.mkdtemp())
    lexicon_lib.write_lang(tmp, lexicon)
    (tmp / "lm.arpa").write_text(graph_lib.train_lm_arpa(sentences, 3))
    context = context_lib.Monophone(lexicon.phone_ids)
    hclg = graph_lib.build_hclg(
        lexicon, graph_lib.grammar_fst(tmp / "lm.arpa", tmp / "words.txt"), context, graph_lib.HmmCosts(), 0.5
    )
    graph = decoder_lib.Graph(hclg, {i: w for w, i in lexicon.word_ids.items()})
    scores = {f"u{i}": rng.normal(0, 3, size=(300, context.num_pdfs)).astype(np.float32) for i in range(20)}
    return scores, graph


def main():
    workdir = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else None
    if workdir is not None and (workdir / "graph" / "HCLG.fst").exists():
        scores, graph = _workdir_scores(workdir)
        source = str(workdir)
    else:
        scores, graph = _synthetic_scores()
        source = "synthetic"
    scale = float(sys.argv[2]) if len(sys.argv) > 2 else 0.1
    beam = float(sys.argv[3]) if len(sys.argv) > 3 else 13.0
    frames = sum(len(s) for s in scores.values())
    start = time.perf_counter()
    decoder_lib.decode(scores, graph, acoustic_scale=scale, beam=beam)
    seconds = time.perf_counter() - start
    audio_seconds = frames * 0.01
    print(
        json.dumps(
            {
                "rtf": seconds / audio_seconds,
                "decode_seconds": seconds,
                "audio_seconds": audio_seconds,
                "utterances": len(scores),
                "acoustic_scale": scale,
                "beam": beam,
                "graph": decoder_lib.graph_size(graph),
                "source": source,
            }
        )
    )


if __name__ == "__main__":
    main()
