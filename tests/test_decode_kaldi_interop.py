"""Kaldi interop: pdf-id alignments in through kaldiio, a transition-id HCLG decoded
through its pdf table; and multi-process decoding gives the single-process result."""

import json

import kaldiio
import numpy as np

from tsasr.hmm import context as context_lib
from tsasr.hmm import graph as graph_lib
from tsasr.decode import decoder as decoder_lib
from tsasr.decode import kaldi_interop
from tsasr import kaldi

from test_decode_graph import _assert_decodes, _frames_for, _tiny_lang, _written_graph


def test_import_pdf_alignments_ark_and_scp(tmp_path):
    alignments = {
        "utt1": np.array([0, 0, 3, 3, 2], np.int32),
        "utt2": np.array([1, 2, 2], np.int32),
        "bad": np.array([0, 7], np.int32),
    }  # 7 is beyond the model's 5 pdfs
    kaldiio.save_ark(str(tmp_path / "ali.ark"), alignments, scp=str(tmp_path / "ali.scp"))
    for rspecifier, out in (
        (f"ark:{tmp_path / 'ali.ark'}", tmp_path / "a"),
        (f"scp:{tmp_path / 'ali.scp'}", tmp_path / "b"),
    ):
        summary = kaldi_interop.import_pdf_alignments(rspecifier, 5, out)
        assert summary == {"utterances": 2, "skipped": ["bad"], "num_senones": 5}
        senones = np.load(out / "senones.npz")
        np.testing.assert_array_equal(senones["utt1"], alignments["utt1"])
        np.testing.assert_array_equal(senones["utt2"], alignments["utt2"])
        assert json.loads((out / "index.json").read_text()) == {"utt1": 5, "utt2": 3}
        counts = np.array([2, 1, 3, 2, 0])  # add-one smoothed below
        np.testing.assert_allclose(np.load(out / "priors.npy"), (counts + 1) / (8 + 5))


def test_relabelled_kaldi_hclg_decodes_like_ours(tmp_path):
    lexicon, grammar = _tiny_lang(tmp_path)
    context = context_lib.Monophone(lexicon.phone_ids)
    hclg = graph_lib.build_hclg(lexicon, grammar, context, graph_lib.HmmCosts(), 0.5)
    # A Kaldi-style HCLG: every pdf has two transition ids (2 pdf + 1, 2 pdf + 2), used
    # alternately, as a forward arc and a self-loop would be.
    arcs = kaldi.to_arcs(hclg)
    emitting = arcs.ilabel > 0
    arcs.ilabel[emitting] = 2 * (arcs.ilabel[emitting] - 1) + 1 + np.arange(emitting.sum()) % 2
    graph_lib.write_fst(tmp_path / "kaldi" / "HCLG.fst", kaldi.from_arcs(arcs))
    transition_id_to_pdf = [-1] + [t // 2 for t in range(2 * context.num_pdfs)]
    graph = kaldi_interop.relabel_kaldi_hclg(
        tmp_path / "kaldi" / "HCLG.fst", transition_id_to_pdf, tmp_path / "lang" / "words.txt"
    )
    _assert_decodes(graph, lexicon, context, (["yes", "no"], ["maybe", "yes"]))


def test_decoder_pool_matches_single_process(tmp_path):
    lexicon, grammar = _tiny_lang(tmp_path)
    context = context_lib.Monophone(lexicon.phone_ids)
    graph_dir = _written_graph(tmp_path, lexicon, grammar, context)
    rng = np.random.default_rng(0)
    loglikes = {}
    for i, words in enumerate([["yes"], ["no", "yes"], ["maybe"], ["yes", "no", "maybe"]] * 2):
        senones = _frames_for(lexicon, context, words)
        noisy = rng.normal(-6.0, 3.0, (len(senones), context.num_pdfs)).astype(np.float32)
        noisy[np.arange(len(senones)), senones] += 4.0
        loglikes[f"u{i}"] = noisy
    single = decoder_lib.decode(loglikes, graph_dir, acoustic_scale=0.5)
    with decoder_lib.DecoderPool(graph_dir, workers=2) as pool:
        assert pool.decode(loglikes, 0.5) == single
        assert list(pool.decode(loglikes, 0.5)[0]) == list(loglikes)  # input order kept


def test_native_stderr_goes_to_the_log_not_the_terminal(capfd, caplog):
    """Kaldi's C++ writes progress straight to file descriptor 2; inside native_stderr_to_log
    those lines reach the named logger and nothing reaches the process's stderr."""
    import logging
    import os

    from tsasr.kaldi import native_stderr_to_log

    logger = logging.getLogger("tsasr.test_native")
    with caplog.at_level(logging.DEBUG, logger="tsasr.test_native"):
        with native_stderr_to_log(logger):
            os.write(2, b"LOG (arpa2fst) Processing 3-grams\n\nanother line\n")
    assert capfd.readouterr().err == ""
    assert [r.getMessage() for r in caplog.records if r.name == "tsasr.test_native"] == [
        "LOG (arpa2fst) Processing 3-grams",
        "another line",
    ]
    os.write(2, b"after\n")  # file descriptor 2 is restored
    assert capfd.readouterr().err == "after\n"
