"""Context dependency: which senone (pdf) an HMM state of a phone in context emits.

Two implementations share one small interface, so graph building and alignment do not
care which is in use: `Monophone` (one pdf per phone and state, for the flat start) and
`tsasr.hmm.tree.SenoneTree` (triphone states tied by the decision tree).
"""

from __future__ import annotations

from typing import Protocol, Sequence

from tsasr.hmm import phones as phone_set

SILENCE_STATES = 5
PHONE_STATES = 3


def num_states(phone_name: str) -> int:
    """HMM states of a phone: 5 for silence and spoken noise, 3 otherwise."""
    return SILENCE_STATES if phone_name in phone_set.SILENCE_PHONES else PHONE_STATES


class ContextDependency(Protocol):
    """Maps (phone window, HMM state) to a pdf id."""

    context_width: int
    central_position: int
    num_pdfs: int

    def pdf(self, window: Sequence[int], state: int) -> int: ...

    def num_states(self, phone: int) -> int: ...


class Monophone:
    """Context-independent pdfs: pdf = offset of the phone + HMM state."""

    context_width = 1
    central_position = 0

    def __init__(self, phone_ids: dict[str, int]):
        self._states = {}
        self._offset = {}
        next_pdf = 0
        for name in phone_set.PHONES:
            pid = phone_ids[name]
            self._offset[pid] = next_pdf
            self._states[pid] = num_states(name)
            next_pdf += self._states[pid]
        self.num_pdfs = next_pdf
        # pdf -> (phone id, state), for reading monophone alignments.
        self.pdf_to_phone_state = {}
        for pid, offset in self._offset.items():
            for s in range(self._states[pid]):
                self.pdf_to_phone_state[offset + s] = (pid, s)

    def pdf(self, window: Sequence[int], state: int) -> int:
        return self._offset[window[self.central_position]] + state

    def num_states(self, phone: int) -> int:
        return self._states[phone]
