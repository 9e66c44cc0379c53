"""Alignment quality: phone boundaries against the TTS engine's phoneme timings.

The built-in corpus records when espeak started each phoneme. Where the aligned phone
sequence and the espeak sequence (mapped to ARPAbet) agree locally — both phones on
either side of a boundary match in an edit alignment of the two sequences — the
boundary counts, and it is correct when the aligned time is within the tolerance.
"""

from __future__ import annotations

from typing import Sequence

import kaldialign

from tsasr.hmm import phones as phone_set

FRAME_SHIFT_S = 0.010
# A boundary at frame t lies between frames t-1 and t: midway between their window
# centres, 0.0125 s after each frame's start.
BOUNDARY_OFFSET_S = 0.0075


def reference_phones(tts_phonemes: Sequence[Sequence]) -> list[tuple[str, float | None]]:
  """espeak (start, mnemonic) -> ARPAbet (phone, start); only the first ARPAbet phone
  of a mnemonic that maps to several has a known start."""
  result = []
  for start, mnemonic in tts_phonemes:
    mapped = phone_set.espeak_to_arpabet(mnemonic)
    for i, phone in enumerate(mapped or []):
      result.append((phone, float(start) if i == 0 else None))
  return result


def aligned_phones(segments: Sequence[tuple[int, int, str]]) -> list[tuple[str, float]]:
  """(first frame, end frame, phone) segments -> non-silence (phone, start seconds)."""
  return [(phone, first * FRAME_SHIFT_S + BOUNDARY_OFFSET_S)
          for first, _, phone in segments if phone not in phone_set.SILENCE_PHONES]


def boundary_counts(reference: Sequence[tuple[str, float | None]],
                    aligned: Sequence[tuple[str, float]], tolerance_s: float) -> tuple[int, int]:
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
