"""Reading audio into the in-memory contract: mono, 16 kHz, float32 in [-1, 1].

Files at other sample rates are resampled on read and the log says so once per rate; anything
else that is not mono finite audio is an `AudioError` naming the file. Nothing here writes.
"""

from __future__ import annotations

import functools
import logging
import math
import os

import numpy as np
import soundfile
from scipy import signal

SAMPLE_RATE = 16000
log = logging.getLogger(__name__)


class AudioError(ValueError):
    """An audio file that cannot be used, with the file and the reason in the message."""


@functools.cache
def _note_resampling(rate: int) -> None:
    log.info("resampling audio recorded at %d Hz to %d Hz on read", rate, SAMPLE_RATE)


def resample(audio: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling (scipy's Kaiser-windowed FIR), float32 out."""
    if rate == target:
        return audio.astype(np.float32, copy=False)
    g = math.gcd(rate, target)
    return signal.resample_poly(audio, target // g, rate // g).astype(np.float32)


def read_audio(path: str | os.PathLike, start: int = 0, frames: int = -1) -> np.ndarray:
    """Reads a mono file as float32 at 16 kHz; `start`/`frames` count samples at the file's rate."""
    try:
        audio, rate = soundfile.read(path, start=start, frames=frames, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as err:
        if not os.path.exists(path):
            raise AudioError(f"{path}: file not found") from err
        raise AudioError(f"{path}: unreadable audio ({err})") from err
    if audio.shape[1] != 1:
        raise AudioError(f"{path}: has {audio.shape[1]} channels; tsasr reads mono audio only")
    audio = audio[:, 0]
    if audio.size == 0:
        raise AudioError(f"{path}: empty audio")
    if not np.all(np.isfinite(audio)):
        raise AudioError(f"{path}: contains NaN or Inf samples")
    if rate != SAMPLE_RATE:
        _note_resampling(rate)
        audio = resample(audio, rate)
    return audio


def audio_info(path: str | os.PathLike) -> soundfile._SoundFileInfo:
    """Header of an audio file (rate, channels, frames) without reading samples."""
    try:
        return soundfile.info(path)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as err:
        if not os.path.exists(path):
            raise AudioError(f"{path}: file not found") from err
        raise AudioError(f"{path}: unreadable audio ({err})") from err
