import subprocess
import sys

import numpy as np

from data_prep import sentences
from tsasr.audio import tts


def test_synthesis_is_16k_with_ordered_phoneme_events():
    result = tts.synthesizer().synthesize("set a timer for ten minutes", tts.Voice("en-us", "m3", 50, 175))
    duration = result.audio.size / tts.TARGET_RATE_HZ
    assert 1.0 < duration < 4.0
    assert result.audio.dtype == np.float32 and np.max(np.abs(result.audio)) <= 1.0
    times = [t for t, _ in result.phonemes]
    assert times == sorted(times) and times[-1] <= duration + 0.05
    names = [p for _, p in result.phonemes]
    assert "s" in names and "t" in names and "m" in names
    assert len(result.words) >= 5  # one event per word


def test_voices_differ():
    synth = tts.synthesizer()
    a = synth.synthesize("call mom", tts.Voice("en-us", "m1", 40, 160)).audio
    b = synth.synthesize("call mom", tts.Voice("en-gb-scotland", "f1", 70, 190)).audio
    assert a.size != b.size or not np.allclose(a, b)


def test_g2p_phonemes():
    assert "z" in tts.synthesizer().phonemes("zebra")


def test_assistant_sentences_cover_the_domain():
    texts = sentences.assistant_sentences(20000, seed=0)
    vocabulary = {w for t in texts for w in t.split()}
    assert len(set(texts)) > 5000
    assert len(vocabulary) >= 1000
    assert all(sentences.normalise(t) == t for t in texts[:500])
    joined = " ".join(texts)
    for marker in ("timer", "alarm", "weather", "play", "lights", "shopping list", "call", "remind"):
        assert marker in joined
    assert texts == sentences.assistant_sentences(20000, seed=0)


def test_broadcast_sentences_are_disjoint_from_assistant_sentences():
    assert not set(sentences.broadcast_sentences(2000, 0)) & set(sentences.assistant_sentences(20000, 0))


def test_spell_number():
    assert sentences.spell_number(0) == "zero"
    assert sentences.spell_number(45) == "forty five"
    assert sentences.spell_number(205) == "two hundred and five"
    assert sentences.spell_number(3012) == "three thousand and twelve"


_HASH_EVERY_VARIANT = """
import hashlib
from data_prep import noise
from tsasr.audio import tts
synth = tts.synthesizer()
for variant in tts.VARIANTS + noise.TV_VARIANTS["train"] + noise.TV_VARIANTS["test"]:
    audio = synth.synthesize("set a timer for ten minutes", tts.Voice("en-us", variant, 50, 170)).audio
    print(variant, hashlib.sha256(audio.tobytes()).hexdigest())
"""


def test_every_variant_synthesises_the_same_audio_in_every_process():
    """A corpus is a function of its seed: espeak-ng variants whose breath noise it seeds itself
    (f2, f3, f5, victor) differ between processes and are not used."""
    runs = [
        subprocess.run([sys.executable, "-c", _HASH_EVERY_VARIANT], capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    ]
    assert runs[0].count("\n") == len(tts.VARIANTS) + 19
    differ = [a.split()[0] for a, b in zip(runs[0].splitlines(), runs[1].splitlines()) if a != b]
    assert differ == []
