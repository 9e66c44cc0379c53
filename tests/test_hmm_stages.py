"""The align and graph stages end to end on a handful of synthetic (TTS) utterances."""

import json
import pathlib
import random
import shutil

import ml_collections
import numpy as np
import pytest
import soundfile as sf

from tsasr.audio.tts import Voice, synthesizer
from tsasr.recipes.asr import config as asr_config
from tsasr.recipes.asr import evaluate as asr_evaluate
from tsasr.hmm import stages


def _make_corpus(workdir: pathlib.Path, sizes: dict[str, int]) -> None:
    rng = random.Random(0)
    verbs = ["set a timer for", "play", "call", "turn off", "turn on", "show me"]
    objects = ["ten minutes", "the lights", "some music", "my mother", "the radio", "the news"]
    voices = [
        Voice("en-us", "m3", pitch=50, rate=175),
        Voice("en-us", "f2", pitch=60, rate=165),
        Voice("en", "m1", pitch=45, rate=180),
    ]
    synth = synthesizer()
    (workdir / "corpus" / "wav").mkdir(parents=True)
    for split, count in sizes.items():
        lines = []
        for i in range(count):
            text = f"{rng.choice(verbs)} {rng.choice(objects)}"
            v = i % len(voices)
            result = synth.synthesize(text, voices[v])
            uid = f"{split}-{i:03d}"
            sf.write(workdir / "corpus" / "wav" / f"{uid}.wav", result.audio, 16000)
            lines.append(
                json.dumps(
                    {
                        "id": uid,
                        "audio": f"wav/{uid}.wav",
                        "duration": len(result.audio) / 16000,
                        "text": text,
                        "speaker": f"spk{v}",
                        "tts_phonemes": [[t, p] for t, p in result.phonemes],
                    }
                )
            )
        (workdir / "corpus" / f"{split}.jsonl").write_text("\n".join(lines) + "\n")


@pytest.mark.slow
def test_align_and_graph_stages(tmp_path):
    _make_corpus(tmp_path, {"train_labelled": 36, "dev": 6, "test": 8})
    # An utterance with a word no dictionary or G2P can pronounce is excluded, not fatal.
    with open(tmp_path / "corpus" / "train_labelled.jsonl", "a") as f:
        f.write(
            json.dumps(
                {
                    "id": "bad",
                    "audio": "wav/train_labelled-000.wav",
                    "duration": 1.0,
                    "text": "call qqxzv",
                    "speaker": "spk0",
                }
            )
            + "\n"
        )
    config = ml_collections.ConfigDict()
    config.hmm = asr_config.hmm_config_tiny()
    config.hmm.g2p = False
    config.hmm.mono_iters = 6
    config.hmm.tri_iters = 3
    config.hmm.num_senones = 160
    config.decode = asr_config.decode_config_tiny()

    summary = stages.align(config, tmp_path)
    assert summary["excluded_utterances"] == 1
    excluded = json.loads((tmp_path / "align" / "excluded.json").read_text())
    assert excluded["bad"].startswith("no pronunciation")
    assert 127 < summary["num_senones"] <= 160
    assert summary["boundary_accuracy"] > 0.4
    senones = np.load(tmp_path / "align" / "senones.npz")
    priors = np.load(tmp_path / "align" / "priors.npy")
    assert len(priors) == summary["num_senones"] and abs(priors.sum() - 1) < 1e-9
    manifest = [json.loads(l) for l in (tmp_path / "corpus" / "train_labelled.jsonl").read_text().splitlines()]
    for record in manifest[:-1]:
        samples = sf.info(tmp_path / "corpus" / record["audio"]).frames
        assert len(senones[record["id"]]) == 1 + (samples - 400) // 160
        assert senones[record["id"]].max() < summary["num_senones"]
    tree = json.loads((tmp_path / "align" / "tree.json").read_text())
    assert tree["num_senones"] == summary["num_senones"]

    # Two realignment workers give the same alignments, tree and model.
    other = tmp_path / "two_workers"
    shutil.copytree(tmp_path / "corpus", other / "corpus")
    config.workers = 2
    stages.align(config, other)
    config.workers = 1
    other_senones = np.load(other / "align" / "senones.npz")
    assert sorted(other_senones.files) == sorted(senones.files)
    for utt in senones.files:
        np.testing.assert_array_equal(other_senones[utt], senones[utt])
    assert (other / "align" / "tree.json").read_text() == (tmp_path / "align" / "tree.json").read_text()
    assert (other / "align" / "tri_gmm.kaldi").read_bytes() == (tmp_path / "align" / "tri_gmm.kaldi").read_bytes()

    stages.graph(config, tmp_path)
    assert (tmp_path / "graph" / "HCLG.fst").exists()
    gmm_wer = asr_evaluate.gmm(config, tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["systems"]["gmm"]["wer"]["clean"] == gmm_wer["clean"]
    assert gmm_wer["clean"] < 30.0
