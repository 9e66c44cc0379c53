"""Graph building on a tiny lexicon and grammar decodes a known path; WER."""

import numpy as np

from tsasr.hmm import context as context_lib
from tsasr.hmm import graph as graph_lib
from tsasr.hmm import lexicon as lexicon_lib
from tsasr.decode import decoder as decoder_lib
from tsasr.decode import scoring

import kaldialign


def _tiny_lang(tmp_path):
    lexicon = lexicon_lib.build_lexicon(["yes", "no", "maybe"], g2p=None)
    lexicon_lib.write_lang(tmp_path / "lang", lexicon)
    arpa = graph_lib.train_lm_arpa([["yes", "no"], ["no", "yes"], ["maybe", "yes"], ["yes", "no", "maybe"]], order=2)
    (tmp_path / "lm.arpa").write_text(arpa)
    grammar = graph_lib.grammar_fst(tmp_path / "lm.arpa", tmp_path / "lang" / "words.txt")
    return lexicon, grammar


def _frames_for(lexicon, context, words, frames_per_state=3, silence_frames=6):
    """Per-frame senone ids of a monophone path: SIL word SIL word ... SIL."""
    pid = lexicon.phone_ids
    sil = pid["SIL"]
    senones = []

    def phone(p):
        for s in range(context.num_states(p)):
            senones.extend([context.pdf([p], s)] * frames_per_state)

    phone(sil)
    for w in words:
        for p in lexicon.prons[w][0]:
            phone(pid[p])
        phone(sil)
    return np.array(senones)


def test_graph_decodes_known_path(tmp_path):
    lexicon, grammar = _tiny_lang(tmp_path)
    context = context_lib.Monophone(lexicon.phone_ids)
    hclg = graph_lib.build_hclg(lexicon, grammar, context, graph_lib.HmmCosts(), 0.5)
    graph = decoder_lib.Graph(hclg, {i: w for w, i in lexicon.word_ids.items()})
    _assert_decodes(graph, lexicon, context, (["yes", "no"], ["maybe", "yes"], ["no", "yes", "no"]))


def _assert_decodes(graph, lexicon, context, sentences):
    """Each sentence's own senone path decodes to the sentence."""
    for words in sentences:
        senones = _frames_for(lexicon, context, words)
        loglikes = np.full((len(senones), context.num_pdfs), -20.0, np.float32)
        loglikes[np.arange(len(senones)), senones] = 0.0
        hyps, partial = decoder_lib.decode({"u": loglikes}, graph, acoustic_scale=1.0)
        assert hyps["u"] == words and not partial


def _written_graph(tmp_path, lexicon, grammar, context):
    """Our HCLG of the tiny language written with its words.txt to TMP/graph."""
    hclg = graph_lib.build_hclg(lexicon, grammar, context, graph_lib.HmmCosts(), 0.5)
    graph_dir = tmp_path / "graph"
    graph_lib.write_fst(graph_dir / "HCLG.fst", hclg)
    (graph_dir / "words.txt").write_text((tmp_path / "lang" / "words.txt").read_text())
    return graph_dir


def test_graph_written_and_loaded(tmp_path):
    lexicon, grammar = _tiny_lang(tmp_path)
    context = context_lib.Monophone(lexicon.phone_ids)
    graph_dir = _written_graph(tmp_path, lexicon, grammar, context)
    senones = _frames_for(lexicon, context, ["no"])
    loglikes = np.full((len(senones), context.num_pdfs), -20.0, np.float32)
    loglikes[np.arange(len(senones)), senones] = 0.0
    hyps, _ = decoder_lib.decode({"u": loglikes}, graph_dir, acoustic_scale=1.0)
    assert hyps["u"] == ["no"]
    assert decoder_lib.graph_size(decoder_lib.Graph.load(graph_dir))["arcs"] > 0


def test_wer_matches_kaldialign():
    rng = np.random.default_rng(0)
    vocab = ["a", "b", "c", "d"]
    refs = {f"u{i}": list(rng.choice(vocab, rng.integers(1, 8))) for i in range(30)}
    hyps = {u: list(rng.choice(vocab, rng.integers(0, 8))) for u in refs}
    errors = sum(kaldialign.edit_distance(refs[u], hyps[u])["total"] for u in refs)
    words = sum(len(r) for r in refs.values())
    got = scoring.wer(refs, hyps)
    assert got["errors"] == errors and got["words"] == words
    np.testing.assert_allclose(got["wer"], 100.0 * errors / words)
    expected = kaldialign.bootstrap_wer_ci(
        [refs[u] for u in sorted(refs)],
        [hyps[u] for u in sorted(refs)],
        [refs[u] for u in sorted(refs)],
        replications=500,
    )
    compared = scoring.compare(refs, hyps, refs, replications=500)
    np.testing.assert_allclose(compared["a"]["wer"], 100 * expected["system1"]["wer"])
    assert compared["b"]["wer"] == 0.0 and compared["p_b_better"] > 0.99


def test_pseudo_log_likelihoods_subtract_log_priors():
    post = np.log(np.array([[0.5, 0.25, 0.25]]))
    priors = np.array([0.5, 0.25, 0.25])
    np.testing.assert_allclose(decoder_lib.pseudo_log_likelihoods(post, priors), 0.0, atol=1e-12)


def test_lm_training_writes_no_progress_bars(capfd):
    """kaldingram draws tqdm bars on stderr; a redirected run log must not collect them."""
    import tqdm

    arpa = graph_lib.train_lm_arpa([["yes", "no"], ["no", "yes"], ["maybe", "yes"]], order=3)
    assert "\\data\\" in arpa and "\\3-grams:" in arpa
    assert capfd.readouterr().err == ""
    from kaldingram import train as ngram_train

    assert ngram_train.tqdm is tqdm.tqdm  # restored for anyone else
