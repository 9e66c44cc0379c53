"""Alignment quality: phone boundaries against the TTS engine's phoneme timings.

The built-in corpus records when espeak started each phoneme. Where the aligned phone
sequence and the espeak sequence (mapped to ARPAbet) agree locally — both phones on
either side of a boundary match in an edit alignment of the two sequences — the
boundary counts, and it is correct when the aligned time is within the tolerance.

espeak times a stop or affricate at its release: the closure silence before the burst
(about 40 ms for p, t, k, ch) is generated at the end of the previous phoneme. Our
convention, like the aligner's and TIMIT's, puts the closure inside the stop, so given
the audio the reference start of a stop moves back to the onset of that silence.
"""

from __future__ import annotations

from typing import Sequence

import kaldialign
import numpy as np

from tsasr.hmm import phones as phone_set

FRAME_SHIFT_S = 0.010
# A boundary at frame t lies between frames t-1 and t: midway between their window
# centres, 0.0125 s after each frame's start.
BOUNDARY_OFFSET_S = 0.0075
STOPS = frozenset({"P", "T", "K", "B", "D", "G", "CH", "JH"})
# Closure silence: 1 ms blocks whose peak stays below this (espeak writes digital silence;
# resampling leaves only tiny ripples on it), searched at most this far back.
_SILENCE_PEAK = 3e-3
_MAX_CLOSURE_S = 0.15


def reference_phones(
    tts_phonemes: Sequence[Sequence], audio: np.ndarray | None = None, sample_rate: int = 16000
) -> list[tuple[str, float | None]]:
    """espeak (start, mnemonic) -> ARPAbet (phone, start); only the first ARPAbet phone
    of a mnemonic that maps to several has a known start. With the utterance's clean
    `audio`, stops start at their closure (see the module docstring)."""
    result = []
    previous_start = 0.0
    for start, mnemonic in tts_phonemes:
        mapped = phone_set.espeak_to_arpabet(mnemonic)
        start = float(start)
        if mapped and mapped[0] in STOPS and audio is not None:
            start = closure_onset(audio, start, max(previous_start, start - _MAX_CLOSURE_S), sample_rate)
        for i, phone in enumerate(mapped or []):
            result.append((phone, start if i == 0 else None))
        if mapped:
            previous_start = float(start)
    return result


def closure_onset(audio: np.ndarray, release_s: float, earliest_s: float, sample_rate: int = 16000) -> float:
    """Start of the silent run that ends at `release_s` (not before `earliest_s`), or
    `release_s` itself when the sound just before it is not silent."""
    block = sample_rate // 1000
    release = end = min(int(round(release_s * sample_rate)), len(audio))
    first = max(0, int(round(earliest_s * sample_rate)))
    while end - block >= first and np.max(np.abs(audio[end - block : end])) < _SILENCE_PEAK:
        end -= block
    return end / sample_rate if end < release else release_s


def aligned_phones(segments: Sequence[tuple[int, int, str]]) -> list[tuple[str, float]]:
    """(first frame, end frame, phone) segments -> non-silence (phone, start seconds)."""
    return [
        (phone, first * FRAME_SHIFT_S + BOUNDARY_OFFSET_S)
        for first, _, phone in segments
        if phone not in phone_set.SILENCE_PHONES
    ]


def boundary_counts(
    reference: Sequence[tuple[str, float | None]], aligned: Sequence[tuple[str, float]], tolerance_s: float
) -> tuple[int, int]:
    """(boundaries within tolerance, boundaries compared) for one utterance."""
    eps = "*"
    pairs = kaldialign.align([p for p, _ in reference], [p for p, _ in aligned], eps)
    within = compared = 0
    i = j = 0
    previous_match = True  # the utterance start acts as a matching left neighbour
    for ref_phone, hyp_phone in pairs:
        match = ref_phone == hyp_phone and ref_phone != eps
        if match and previous_match and reference[i][1] is not None:
            compared += 1
            within += abs(reference[i][1] - aligned[j][1]) <= tolerance_s
        previous_match = match
        i += ref_phone != eps
        j += hyp_phone != eps
    return within, compared
