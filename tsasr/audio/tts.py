"""espeak-ng speech synthesis with phoneme timings, through the library shipped by `espeakng-loader`.

The built-in corpus is read by espeak-ng (no system install: the shared library and its data
come from the `espeakng-loader` wheel). Besides audio, espeak reports a PHONEME event for
every phoneme it plays, with its start time: those are the reference alignments the corpus
stage records, used later only to measure aligner quality.

espeak keeps global state (voice, parameters, callback), so a process holds one `Synthesizer`;
parallel synthesis runs in separate processes. This module must not know about corpora: the
corpus and noise stages (data_prep) read speech with it and the lexicon (tsasr.hmm) uses its G2P.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import threading

import numpy as np

import espeakng_loader

ESPEAK_RATE_HZ = 22050
TARGET_RATE_HZ = 16000

# speak_lib.h constants.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_PHONEME = 7
_PARAM_RATE = 1
_PARAM_PITCH = 3
_PARAM_RANGE = 4

# Accents of English shipped with espeak-ng.
ACCENTS = (
    "en-us",
    "en",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)
# Voice variants (voices/!v) that stay intelligible; robotic, whisper and joke variants are left out,
# and so are f2, f3, f5 and victor: their breath noise comes from a generator espeak-ng seeds
# itself (not from libc's srand), so the same text differs from process to process, and a
# corpus must be a function of its seed (tests/test_tts_and_sentences.py checks every variant).
VARIANTS = (
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "m8",
    "f1",
    "f4",
    "Alex",
    "Andy",
    "adam",
    "Annie",
    "belinda",
    "benjamin",
    "caleb",
    "david",
    "ed",
    "edward",
    "grandma",
    "grandpa",
    "ian",
    "john",
    "linda",
    "max",
    "michel",
    "norbert",
    "paul",
    "quincy",
    "rob",
    "robert",
    "steph",
    "travis",
    "zac",
    "shelby",
)


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds from the start of the utterance
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclasses.dataclass(frozen=True)
class Voice:
    """One synthetic speaker: an accent, a voice variant, a pitch and a speaking rate."""

    accent: str
    variant: str
    pitch: int  # espeak pitch 0..99 (50 = default)
    rate: int  # words per minute (175 = default)
    pitch_range: int = 50

    @property
    def name(self) -> str:
        return f"{self.accent}+{self.variant}"


@dataclasses.dataclass
class Synthesis:
    """Audio at 16 kHz and espeak's phoneme events (start seconds, espeak phoneme mnemonic)."""

    audio: np.ndarray  # [samples] float32 in [-1, 1]
    phonemes: list[tuple[float, str]]
    words: list[float]  # start time of each word, seconds


class Synthesizer:
    """A process-wide espeak-ng handle. Not thread-safe (espeak's state is global)."""

    _lock = threading.Lock()

    def __init__(self):
        self._lib = _library()
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, str]] = []
        self._callback = _CALLBACK(self._on_audio)  # keep a reference: espeak holds the pointer
        self._lib.espeak_SetSynthCallback(self._callback)
        self._voice: str | None = None

    def _on_audio(self, wav, num_samples, events) -> int:
        if num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type == _EVENT_PHONEME:
                self._events.append((_EVENT_PHONEME, event.audio_position, event.id.string.decode("ascii", "replace")))
            elif event.type == _EVENT_WORD:
                self._events.append((_EVENT_WORD, event.audio_position, ""))
            i += 1
        return 0

    def synthesize(self, text: str, voice: Voice) -> Synthesis:
        """Speaks `text` with `voice`; returns 16 kHz audio and phoneme start times."""
        with self._lock:
            if self._voice != voice.name:
                if self._lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
                    raise ValueError(f"espeak-ng has no voice {voice.name!r}")
                self._voice = voice.name
            self._lib.espeak_SetParameter(_PARAM_RATE, voice.rate, 0)
            self._lib.espeak_SetParameter(_PARAM_PITCH, voice.pitch, 0)
            self._lib.espeak_SetParameter(_PARAM_RANGE, voice.pitch_range, 0)
            self._chunks, self._events = [], []
            data = text.encode("utf-8") + b"\0"
            status = self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if status != 0:
                raise RuntimeError(f"espeak_Synth failed with status {status} on {text!r}")
            raw = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
            events = self._events
        from scipy import signal  # here, not at import: G2P users need no scipy (seconds to import)

        audio = signal.resample_poly(raw.astype(np.float32) / 32768.0, 320, 441).astype(np.float32)
        np.clip(audio, -1.0, 1.0, out=audio)
        phonemes = [(ms / 1000.0, name) for kind, ms, name in events if kind == _EVENT_PHONEME]
        words = [ms / 1000.0 for kind, ms, _ in events if kind == _EVENT_WORD]
        return Synthesis(audio=audio, phonemes=phonemes, words=words)

    def phonemes(self, text: str, voice: str = "en-us") -> str:
        """espeak's phoneme mnemonics for `text`, words separated by spaces (used as a G2P)."""
        with self._lock:
            if self._voice != voice:
                if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                    raise ValueError(f"espeak-ng has no voice {voice!r}")
                self._voice = voice
            buffer = ctypes.create_string_buffer(text.encode("utf-8"))
            pointer = ctypes.c_char_p(ctypes.addressof(buffer))
            pieces = []
            # espeak returns one clause per call and advances the pointer; NULL when done.
            while pointer.value:
                out = self._lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, 0)
                if out:
                    pieces.append(out.decode("utf-8", "replace").strip())
            return " ".join(p for p in pieces if p)


@functools.cache
def _library():
    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
    rate = lib.espeak_Initialize(
        _AUDIO_OUTPUT_SYNCHRONOUS,
        0,
        espeakng_loader.get_data_path().encode(),
        _INIT_PHONEME_EVENTS | _INIT_DONT_EXIT,
    )
    if rate != ESPEAK_RATE_HZ:
        raise RuntimeError(f"espeak-ng initialisation failed or runs at {rate} Hz, expected {ESPEAK_RATE_HZ}")
    return lib


@functools.cache
def synthesizer() -> Synthesizer:
    """The process's synthesizer (created on first use, so worker processes each make their own)."""
    return Synthesizer()
