"""Forced alignment of a synthetic utterance recovers its planted state sequence."""

import numpy as np

from tsasr.hmm import align as align_lib
from tsasr.hmm import context as context_lib
from tsasr.hmm import graph as graph_lib
from tsasr.hmm import lexicon as lexicon_lib


def test_alignment_of_synthetic_utterance():
    lexicon = lexicon_lib.build_lexicon(["set", "a", "timer"], g2p=None, max_prons=1)
    context = context_lib.Monophone(lexicon.phone_ids)
    pid = lexicon.phone_ids
    # SIL set a timer (no silence between words), with varied state durations.
    phones = ["SIL"] + list(lexicon.prons["set"][0]) + list(lexicon.prons["a"][0]) + list(lexicon.prons["timer"][0])
    rng = np.random.default_rng(0)
    senones, starts = [], []
    for p in phones:
        starts.append(len(senones))
        for s in range(context.num_states(pid[p])):
            senones.extend([context.pdf([pid[p]], s)] * int(rng.integers(1, 5)))
    senones = np.array(senones)
    loglikes = np.full((len(senones), context.num_pdfs), -8.0, np.float32)
    loglikes[np.arange(len(senones)), senones] = 0.0
    l_fst = lexicon_lib.lexicon_fst(lexicon, 0.5, disambig=False)
    words = [lexicon.word_ids[w] for w in ("set", "a", "timer")]
    graph = graph_lib.alignment_graph(l_fst, words, context, graph_lib.HmmCosts())
    alignment = align_lib.viterbi(graph, loglikes, acoustic_scale=1.0, beam=10, retry_beam=40)
    assert alignment is not None
    np.testing.assert_array_equal(alignment.senones, senones)
    assert [s[0] for s in alignment.segments] == starts
    assert [context.pdf([p], 0) for p in alignment.phones[starts]] == list(senones[starts])
    # Too few frames for the phone sequence: reported as a failure, not raised.
    assert align_lib.viterbi(graph, loglikes[:5], 1.0, 10, 40) is None
