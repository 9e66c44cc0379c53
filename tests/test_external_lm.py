"""The decoding vocabulary and LM from a user's files: a lexicon (hmm.lexicon), extra LM text
(hmm.lm_text) and an ARPA LM (hmm.lm_arpa). The graph stage runs for real on a lang directory
and a monophone tree written here (no audio: the graph reads transcripts only)."""

import json

import ml_collections
import numpy as np
import pytest

from tsasr import kaldi, pipeline
from tsasr.hmm import context as context_lib
from tsasr.hmm import external
from tsasr.hmm import graph as graph_lib
from tsasr.hmm import lexicon as lexicon_lib
from tsasr.hmm import phones as phone_set
from tsasr.hmm import stages
from tsasr.hmm import tree as tree_lib
from tsasr.recipes.asr import base_config, checks
from tsasr.recipes.asr import config as asr_config
from tsasr.recipes.asr import evaluate
from tsasr.recipes.asr.stages import recipe_stages

TRAIN = ["turn on the lights", "play some music", "call my mother", "turn off the radio"]
TEST = ["turn on the kitchen lamp", "play some music", "call my sister"]  # kitchen, lamp, sister: OOV


def _workdir(path):
    """corpus/ manifests, lang/ from the training words, align/ with a monophone tree."""
    for split, texts in (("train_labelled", TRAIN), ("test", TEST)):
        records = [
            {"id": f"{split}-{i}", "audio": "unused.wav", "duration": 1.0, "text": t, "speaker": "s"}
            for i, t in enumerate(texts)
        ]
        (path / "corpus").mkdir(parents=True, exist_ok=True)
        (path / "corpus" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    lexicon = lexicon_lib.build_lexicon({w for t in TRAIN for w in t.split()}, g2p=None)
    lexicon_lib.write_lang(path / "lang", lexicon)
    names = {lexicon.phone_ids[p]: p for p in phone_set.PHONES}
    roots, senone = {}, 0
    for phone_id, name in sorted(names.items()):
        for state in range(context_lib.num_states(name)):
            roots[(phone_id, state)] = {"senone": senone, "count": 1.0}
            senone += 1
    (path / "align").mkdir()
    (path / "align" / "tree.json").write_text(tree_lib.SenoneTree(roots, names).to_json())
    np.savez(path / "align" / "phones.npz", u=np.full(20, lexicon.phone_ids[phone_set.SILENCE]))
    return path


def _config(**hmm):
    config = ml_collections.ConfigDict()
    config.hmm = asr_config.hmm_config_tiny()
    config.hmm.g2p = False
    config.hmm.update(hmm)
    config.decode = asr_config.decode_config_tiny()
    config.decode.conditions = ("clean",)
    return config


def _output_words(workdir) -> set[str]:
    """The words HCLG can output: what any decoder on this graph can recognise."""
    hclg = kaldi.kaldifst.StdVectorFst.read(str(workdir / "graph" / "HCLG.fst"))
    ids = {int(i) for i in np.unique(kaldi.to_arcs(hclg).olabel)} - {0}
    table = dict(line.split()[::-1] for line in (workdir / "graph" / "words.txt").read_text().splitlines())
    return {table[str(i)] for i in ids}


def test_lm_text_extends_the_vocabulary_and_the_oov_rate_falls_to_zero(tmp_path):
    plain = _workdir(tmp_path / "plain")
    stages.graph(_config(), plain)
    assert evaluate.oov(_config(), plain)["clean"] == pytest.approx(100 * 3 / 11, abs=0.01)  # kitchen lamp sister

    extended = _workdir(tmp_path / "extended")
    text = tmp_path / "more.txt"
    text.write_text("Turn on the kitchen lamp\n\ncall my sister please\n")
    summary = stages.graph(_config(lm_text=(str(text),)), extended)
    assert evaluate.oov(_config(), extended)["clean"] == 0.0
    assert summary["lm_sentences"] == len(TRAIN) + 2
    assert {"kitchen", "lamp", "sister", "please"} <= _output_words(extended)
    unigrams = graph_lib.arpa_words((extended / "graph" / "lm.arpa").read_text())
    assert {"kitchen", "lamp", "sister", "please"} <= unigrams
    assert not {"kitchen", "lamp", "sister"} & _output_words(plain)


def test_the_decoding_graph_is_built_from_the_users_arpa(tmp_path):
    """An ARPA without 'radio' (a training word) and with 'lamp' (not one): the graph outputs
    exactly the ARPA's words, so 'radio' cannot be decoded and counts as out of vocabulary."""
    workdir = _workdir(tmp_path / "w")
    words = ["turn", "on", "off", "the", "lights", "lamp", "play", "some", "music", "call", "my", "mother"]
    lines = ["\\data\\", f"ngram 1={len(words) + 3}", "ngram 2=2", "", "\\1-grams:"]
    lines += ["-1.0 </s>", "-99 <s> -0.5", "-1.5 QQXZV -0.3"]  # a word nothing can pronounce
    lines += [f"-1.2 {w.upper()} -0.3" for w in words]
    lines += ["", "\\2-grams:", "-0.2 TURN ON", "-0.4 QQXZV ON", "", "\\end\\", ""]
    arpa = tmp_path / "lm.arpa"
    arpa.write_text("\n".join(lines))
    summary = stages.graph(_config(lm_arpa=str(arpa)), workdir)
    assert _output_words(workdir) == set(words)
    assert summary["lm"] == str(arpa) and summary["lm_words_left_out"] == 1
    stored = (workdir / "graph" / "lm.arpa").read_text()
    assert "-0.2 turn on" in stored and "qqxzv" not in stored and "ngram 1=14" in stored
    records = [{"text": "turn off the radio"}]
    assert evaluate.out_of_vocabulary(records, evaluate.vocabulary(workdir))["oov_words"] == 1


def test_lexicon_file_pronounces_the_words_it_lists(tmp_path):
    lexicon_file = tmp_path / "lexicon.txt"
    lexicon_file.write_text("<unk> SPN\nLIGHTS L AY1 T S\nqqxzv 1.0 K W IH1 Z\nqqxzv K W IY1 Z\n")
    external_prons = external.read_lexicon(lexicon_file)
    assert external_prons == {
        "lights": [("L", "AY", "T", "S")],
        "qqxzv": [("K", "W", "IH", "Z"), ("K", "W", "IY", "Z")],
    }
    lexicon = lexicon_lib.build_lexicon(["lights", "qqxzv", "music"], None, max_prons=2, external=external_prons)
    assert lexicon.prons["lights"] == [("L", "AY", "T", "S")]  # cmudict's own is not used
    assert lexicon.prons["qqxzv"] == [("K", "W", "IH", "Z"), ("K", "W", "IY", "Z")]
    assert lexicon.prons["music"] == [("M", "Y", "UW", "Z", "IH", "K")]  # cmudict for the rest
    assert lexicon.no_pron == []


def test_the_users_files_enter_the_stage_keys_by_content(tmp_path):
    lexicon_file, text = tmp_path / "lexicon.txt", tmp_path / "more.txt"
    lexicon_file.write_text("lights L AY T S\n")
    text.write_text("turn on the kitchen lamp\n")
    config = base_config()
    config.hmm.lexicon, config.hmm.lm_text = str(lexicon_file), (str(text),)
    chain = recipe_stages(config)

    def keys():
        found = pipeline.stage_keys(config, chain)
        return found["align"], found["graph"]

    align, graph = keys()
    text.write_text("turn on the kitchen light\n")  # same size, new content
    assert keys()[0] == align and keys()[1] != graph  # a new LM text retrains nothing
    align, graph = keys()
    lexicon_file.write_text("lights L IY T S\n")
    assert keys()[0] != align and keys()[1] != graph
    align, graph = keys()
    config.hmm.lm_order = 4
    assert keys()[0] == align and keys()[1] != graph


def test_missing_or_malformed_files_are_one_line_each_up_front(tmp_path):
    config = base_config()
    config.hmm.lexicon = str(tmp_path / "nowhere.txt")
    config.hmm.lm_arpa = str(tmp_path / "lm.arpa")
    (tmp_path / "lm.arpa").write_text("this is not an arpa file\n")
    (tmp_path / "empty.txt").write_text("\n\n")
    config.hmm.lm_text = (str(tmp_path / "empty.txt"), str(tmp_path / "gone.txt"))
    assert checks.problems(config) == [
        f"{tmp_path / 'nowhere.txt'}: hmm.lexicon not found",
        f"{tmp_path / 'lm.arpa'}:1: hmm.lm_arpa is not an ARPA file (no \\data\\ header)",
        f"{tmp_path / 'empty.txt'}: hmm.lm_text file has no words",
        f"{tmp_path / 'gone.txt'}: hmm.lm_text file not found",
        "hmm.lm_arpa replaces the trained LM, so hmm.lm_text would train nothing: set one of them",
    ]
    (tmp_path / "lexicon.txt").write_text("lights L AY T S\nlamp L AE M P X\n")
    config.hmm.lexicon = str(tmp_path / "lexicon.txt")
    config.hmm.lm_arpa, config.hmm.lm_text = "", ()
    assert checks.problems(config) == [
        f"{tmp_path / 'lexicon.txt'}:2: hmm.lexicon: 'X' is not an ARPAbet phone (word 'lamp')"
    ]
