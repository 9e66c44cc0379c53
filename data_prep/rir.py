"""Room impulse responses for shoebox rooms: image sources for the early part, a stochastic tail.

The early reflections come from the image-source model of a shoebox up to `max_order`
(pyroomacoustics' ShoeBox model, vectorised here; tested against it), with wall absorption
set by Sabine's formula for the drawn RT60 (pyroomacoustics' inverse_sabine). Computing
every image source up to the full RT60 costs 0.1-3 s per room (measured: 0.07 s at
RT60 = 0.2 s, 2.6 s at 0.7 s), far too slow for a fresh room per utterance, so the late part
is the usual hybrid model's: Gaussian noise under an exponential envelope decaying 60 dB in
RT60, starting where the image sources stop, at the diffuse-field level of the room.
The tail noise comes from `tail_seed`, so a room description regenerates its RIRs exactly.

Measured (or externally simulated) responses, such as the RIRS_NOISES set
(data_prep.rirs_noises), are read by `measured_impulse_responses`: first channel, 16 kHz,
scaled to unit energy.

This module knows rooms and RIRs only, not corpora or mixing.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pyroomacoustics as pra
import soundfile

from tsasr.audio import io as audio_io

RATE = 16000
SPEED_OF_SOUND = pra.constants.get("c")
# pyroomacoustics centres each image source's fractional-delay filter this many samples late.
_FILTER_OFFSET = pra.constants.get("frac_delay_length") // 2
_LOG_10 = float(np.log(10))  # as pyroomacoustics evaluates it


def uniform(rng: np.random.Generator, bounds) -> float:
    """`rng.uniform(*bounds)`, the same number from the same stream at a third of the cost
    (numpy computes low + (high - low) * random(); tests/test_rir.py checks equality)."""
    low = float(bounds[0])
    return low + (float(bounds[1]) - low) * rng.random()


def draw_room(rng: np.random.Generator, ranges, num_noise_sources: int) -> dict:
    """A room with a microphone, a talker and `num_noise_sources` noise sources, all inside.

    `ranges` (a mapping) has `length`, `width`, `height`, `rt60` (pairs), `talker_distance`
    (pair, metres from the microphone) and `margin` (metres from the walls).
    """
    dims = [uniform(rng, ranges["length"]), uniform(rng, ranges["width"]), uniform(rng, ranges["height"])]
    margin = float(ranges["margin"])

    def inside(height_bounds):
        return [
            uniform(rng, (margin, dims[0] - margin)),
            uniform(rng, (margin, dims[1] - margin)),
            uniform(rng, (max(margin, height_bounds[0]), min(dims[2] - margin, height_bounds[1]))),
        ]

    mic = inside((0.7, 1.6))
    # The talker stands at a drawn distance and direction from the microphone, kept inside.
    for _ in range(100):
        distance = uniform(rng, ranges["talker_distance"])
        azimuth = uniform(rng, (0, 2 * np.pi))
        talker = [mic[0] + distance * np.cos(azimuth), mic[1] + distance * np.sin(azimuth), uniform(rng, (1.2, 1.8))]
        if (
            margin <= talker[0] <= dims[0] - margin
            and margin <= talker[1] <= dims[1] - margin
            and talker[2] <= dims[2] - margin
        ):
            break
    else:
        talker = inside((1.2, 1.8))
    noises = [inside((0.3, 2.0)) for _ in range(num_noise_sources)]
    return {
        "dimensions": [round(d, 4) for d in dims],
        "rt60": round(uniform(rng, ranges["rt60"]), 4),
        "microphone": [round(v, 4) for v in mic],
        "talker": [round(float(v), 4) for v in talker],
        "noise_sources": [[round(v, 4) for v in s] for s in noises],
        "tail_seed": int(rng.integers(2**31)),
    }


def direct_path_delay(room: dict, source: list[float]) -> float:
    """Samples from emission to the arrival of the direct sound, as pyroomacoustics places it."""
    distance = float(np.linalg.norm(np.subtract(source, room["microphone"])))
    return _FILTER_OFFSET + distance / SPEED_OF_SOUND * RATE


@functools.cache
def _image_lattice(max_order: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Allen & Berkley image indices: per image and axis, the cell n and the parity q.

    Along an axis of length L an image of a source at s sits at (1 - 2q) s + 2 n L and has
    been reflected |n - q| times by the wall at 0 and |n| times by the wall at L.
    Returns (n [images, 3], q [images, 3], order [images]) for all images of order <= max_order.
    """
    per_axis = [(n, q, abs(n - q) + abs(n)) for n in range(-max_order, max_order + 1) for q in (0, 1)]
    per_axis = [t for t in per_axis if t[2] <= max_order]
    rows = [(a, b, c) for a in per_axis for b in per_axis for c in per_axis if a[2] + b[2] + c[2] <= max_order]
    n = np.array([[a[0], b[0], c[0]] for a, b, c in rows], np.float64)
    q = np.array([[a[1], b[1], c[1]] for a, b, c in rows], np.float64)
    order = np.array([a[2] + b[2] + c[2] for a, b, c in rows], np.int64)
    return n, q, order


def image_sources(dims, source, max_order: int, absorption: float) -> tuple[np.ndarray, np.ndarray]:
    """Image positions [3, images] and their wall damping [images] in a shoebox.

    Every wall reflects sqrt(1 - absorption) of the amplitude, as a pyroomacoustics
    Material with that energy absorption does (tests/test_rir.py compares with its ISM).
    """
    n, q, order = _image_lattice(max_order)
    positions = (1 - 2 * q) * np.asarray(source, np.float64) + 2 * n * np.asarray(dims, np.float64)
    return positions.T, np.sqrt(1 - absorption) ** order


def inverse_sabine(rt60: float, dims) -> tuple[float, int]:
    """pyroomacoustics.inverse_sabine for a shoebox, the same arithmetic in plain floats (50 us -> 3 us).

    Returns the wall energy absorption for `rt60` by Sabine's formula and the image-source
    order that reaches c * rt60; tests/test_rir.py checks equality with pyroomacoustics.
    """
    length, width, height = (float(d) for d in dims)
    pairs = ((length, width), (length, height), (width, height))
    radius = min(a * b / math.sqrt(a**2 + b**2) for a, b in pairs)
    volume = length * width * height
    surface = 2 * (length * width + length * height + width * height)
    absorption = 24 * _LOG_10 * volume / (SPEED_OF_SOUND * surface * rt60)
    if absorption > 1.0:
        raise ValueError("evaluation of parameters failed. room may be too large for required RT60.")
    return absorption, math.ceil(SPEED_OF_SOUND * rt60 / radius - 1)


@functools.cache
def _image_terms(max_order: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(1 - 2q, 2n, order) of `_image_lattice`, the factors image positions are made of."""
    n, q, order = _image_lattice(max_order)
    return 1 - 2 * q, 2 * n, order


def impulse_responses(room: dict, max_order: int) -> np.ndarray:
    """RIRs from the talker and each noise source to the microphone: [sources, samples], talker first.

    The early part is the image-source model of a shoebox (the same images and wall damping
    as pyroomacoustics' ShoeBox, computed here in a few vectorised lines because building a
    ShoeBox costs ~1 ms per room in Python), each image a Hann-windowed-sinc fractional
    delay as in pyroomacoustics; tests/test_rir.py checks the result against
    ShoeBox.compute_rir. Rows are zero-padded to a common length.
    """
    dims, rt60 = room["dimensions"], room["rt60"]
    absorption, sabine_order = inverse_sabine(rt60, dims)
    sign, cells, image_order = _image_terms(min(max_order, sabine_order))
    sources = np.array([room["talker"], *room["noise_sources"]], np.float64)
    # [sources, images, 3]: the same positions as image_sources(), for every source at once
    offsets = sign * sources[:, None, :] + cells * np.asarray(dims, np.float64) - np.asarray(room["microphone"])
    distance = np.sqrt(np.sum(offsets * offsets, axis=-1))
    delays = distance / SPEED_OF_SOUND * RATE
    amplitudes = np.sqrt(1 - absorption) ** image_order / distance  # pyroomacoustics' convention: no 1/(4 pi)
    early_end = np.ceil(delays.max(axis=1) + _FILTER_OFFSET).astype(np.int64)
    width = int(early_end.max() + rt60 * RATE) + _FILTER_OFFSET + 2
    tails = _tail_extents(early_end, amplitudes.max(axis=1), rt60, float(np.prod(dims)), width)
    integer = np.floor(delays)
    # Only as wide as the last tap or tail sample: the tail stops 60 dB down, well before `width`.
    width = min(width, max(int(integer.max()) + 2 * _FILTER_OFFSET + 1, int(tails[1].max())))
    rows = np.arange(len(sources))[:, None]
    out = image_source_rir(
        (rows * width + integer.astype(np.int64)).ravel(),
        delays.ravel() - integer.ravel(),
        amplitudes.ravel(),
        (len(sources), width),
    )
    _add_tails(out, *tails, np.random.default_rng(room["tail_seed"]))
    if not out[:, -1].any():
        out = out[:, : int(np.max(np.nonzero(np.any(out != 0, axis=0)))) + 1]
    return out


_TAPS = np.arange(-_FILTER_OFFSET, _FILTER_OFFSET + 1)  # filter support around each arrival
# Per tap: -(-1)^n, and cos and sin of pi n / offset, for the angle-sum expansions below.
_TAP_SIGN = -((-1.0) ** _TAPS)
_TAP_COS, _TAP_SIN = np.cos(np.pi * _TAPS / _FILTER_OFFSET), np.sin(np.pi * _TAPS / _FILTER_OFFSET)


def image_source_rir(start: np.ndarray, frac: np.ndarray, amplitudes: np.ndarray, shape: tuple) -> np.ndarray:
    """Fractionally delayed impulses summed into an array of `shape`.

    Impulse i arrives `frac[i]` in [0, 1) after flat index `start[i]` (row * width + whole
    samples of delay, before the filter offset). Each is pyroomacoustics' filter, a Hann
    window times a sinc at t = n - frac over taps n = -offset..offset:
        sinc(t) = sin(pi t) / (pi t) = -(-1)^n sin(pi frac) / (pi t)
        hann(t) = (1 + cos(pi n / offset) cos(pi frac / offset) + sin(pi n / offset) sin(pi frac / offset)) / 2
    so trigonometry is evaluated once per impulse, not per tap (np.sinc and np.cos over every
    tap took 0.5 ms a room).
    """
    theta = (np.pi / _FILTER_OFFSET) * frac
    window = np.multiply.outer(np.cos(theta), _TAP_COS)
    window += np.multiply.outer(np.sin(theta), _TAP_SIN)
    window += 1
    # sin(pi frac) = sin(pi (1 - frac)): the smaller argument keeps it accurate as frac nears 1 (t = 1 - frac near 0)
    sine = np.sin(np.pi * np.minimum(frac, 1 - frac))
    window *= np.multiply.outer(amplitudes * sine / (2 * np.pi), _TAP_SIGN)
    t = _TAPS - frac[:, None]
    whole = frac == 0  # a delay of whole samples: the sinc is 1 at t = 0 and 0 at every other tap
    if whole.any():
        t[whole, _FILTER_OFFSET] = 1.0
        window[whole, _FILTER_OFFSET] = amplitudes[whole]
    window /= t
    flat = start[:, None] + (_TAPS + _FILTER_OFFSET)
    # bincount sums colliding indices like np.add.at, an order of magnitude faster.
    return np.bincount(flat.ravel(), window.ravel(), shape[0] * shape[1]).reshape(shape)


def _tail_extents(
    start: np.ndarray, direct: np.ndarray, rt60: float, volume: float, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, stop, envelope) of the diffuse late reverberation of each row.

    Image sources of a shoebox arrive at a rate of 4 pi c^3 t^2 / V per second, each with
    energy (decay / (c t))^2 in pyroomacoustics' amplitude convention, so the expected
    squared RIR is 4 pi c / (V fs) per sample times a decay of 60 dB per RT60, whatever the
    order. Gaussian noise with that envelope stands in for the orders not computed. A tail
    starts where the row's image sources end and stops 60 dB below its direct sound (or at
    `width`): further down lies below 16-bit resolution for any SNR we mix at.
    (tests/test_rir.py checks the level against a full-order ISM.)
    """
    n = np.arange(width, dtype=np.float64) - _FILTER_OFFSET  # samples since emission
    envelope = np.sqrt(4 * np.pi * SPEED_OF_SOUND / (volume * RATE)) * np.exp(-6.9078 * n / (rt60 * RATE))
    falling = -envelope  # ascending, for searchsorted
    stop = np.array([s + int(np.searchsorted(falling[s:], -floor)) for s, floor in zip(start, direct * 1e-3)])
    return start, stop, envelope


def _add_tails(
    out: np.ndarray, start: np.ndarray, stop: np.ndarray, envelope: np.ndarray, rng: np.random.Generator
) -> None:
    """Adds each row's tail (see `_tail_extents`): the envelope times Gaussian noise from `rng`,
    drawn for the tail samples only, row after row."""
    noise = rng.standard_normal(int(np.sum(stop - start)), dtype=np.float32)
    used = 0
    for row, s, e in zip(out, start, stop):
        row[s:e] += envelope[s:e] * noise[used : used + e - s]
        used += e - s


def draw_measured_room(rng: np.random.Generator, rooms: dict[str, list[str]], num_noise_sources: int) -> dict:
    """A room of `rooms` ({room id: its response files}) and, from its files, the response of the
    talker and of each noise source (with replacement: a room may have one response)."""
    names = sorted(rooms)
    room = names[int(rng.integers(len(names)))]
    files = rooms[room]
    return {"id": room, "rirs": [files[int(rng.integers(len(files)))] for _ in range(1 + num_noise_sources)]}


@functools.lru_cache(maxsize=512)
def measured_response(path: str) -> np.ndarray:
    """A response file's first channel at 16 kHz, float64, scaled to unit energy.

    Measured responses come at whatever gain their recording had; unit energy keeps the
    reverberant speech near its clean level (as Kaldi's wav-reverberate normalises its output).
    """
    try:
        audio, rate = soundfile.read(path, dtype="float64", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as err:
        raise audio_io.AudioError(f"{path}: unreadable room response ({err})") from err
    response = audio[:, 0]
    if rate != RATE:
        response = audio_io.resample(response, rate, RATE).astype(np.float64)
    energy = float(np.sum(response * response))
    if not np.isfinite(energy) or energy == 0.0:
        raise audio_io.AudioError(f"{path}: room response is silent or not finite")
    return response / np.sqrt(energy)


def measured_impulse_responses(paths: list[str]) -> np.ndarray:
    """The responses of `paths` (talker first) as [sources, samples], zero-padded to the longest."""
    responses = [measured_response(p) for p in paths]
    out = np.zeros((len(responses), max(len(r) for r in responses)))
    for row, response in zip(out, responses):
        row[: len(response)] = response
    return out
