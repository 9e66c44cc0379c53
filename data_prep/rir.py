"""Room impulse responses for shoebox rooms: image sources for the early part, a stochastic tail.

The early reflections come from the image-source model of a shoebox up to `max_order`
(pyroomacoustics' ShoeBox model, vectorised here; tested against it), with wall absorption
set by Sabine's formula for the drawn RT60 (pyroomacoustics' inverse_sabine). Computing
every image source up to the full RT60 costs 0.1-3 s per room (measured: 0.07 s at
RT60 = 0.2 s, 2.6 s at 0.7 s), far too slow for a fresh room per utterance, so the late part
is the usual hybrid model's: Gaussian noise under an exponential envelope decaying 60 dB in
RT60, starting where the image sources stop, at the diffuse-field level of the room.
The tail noise comes from `tail_seed`, so a room description regenerates its RIRs exactly.

This module knows rooms and RIRs only, not corpora or mixing.
"""

from __future__ import annotations

import functools

import numpy as np
import pyroomacoustics as pra

RATE = 16000
SPEED_OF_SOUND = pra.constants.get("c")
# pyroomacoustics centres each image source's fractional-delay filter this many samples late.
_FILTER_OFFSET = pra.constants.get("frac_delay_length") // 2


def _uniform(rng: np.random.Generator, bounds) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def draw_room(rng: np.random.Generator, ranges, num_noise_sources: int) -> dict:
    """A room with a microphone, a talker and `num_noise_sources` noise sources, all inside.

    `ranges` (a mapping) has `length`, `width`, `height`, `rt60` (pairs), `talker_distance`
    (pair, metres from the microphone) and `margin` (metres from the walls).
    """
    dims = [_uniform(rng, ranges["length"]), _uniform(rng, ranges["width"]), _uniform(rng, ranges["height"])]
    margin = float(ranges["margin"])

    def inside(height_bounds):
        return [
            _uniform(rng, (margin, dims[0] - margin)),
            _uniform(rng, (margin, dims[1] - margin)),
            _uniform(rng, (max(margin, height_bounds[0]), min(dims[2] - margin, height_bounds[1]))),
        ]

    mic = inside((0.7, 1.6))
    # The talker stands at a drawn distance and direction from the microphone, kept inside.
    for _ in range(100):
        distance = _uniform(rng, ranges["talker_distance"])
        azimuth = _uniform(rng, (0, 2 * np.pi))
        talker = [mic[0] + distance * np.cos(azimuth), mic[1] + distance * np.sin(azimuth), _uniform(rng, (1.2, 1.8))]
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
        "rt60": round(_uniform(rng, ranges["rt60"]), 4),
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


def impulse_responses(room: dict, max_order: int) -> np.ndarray:
    """RIRs from the talker and each noise source to the microphone: [sources, samples], talker first.

    The early part is the image-source model of a shoebox (the same images and wall damping
    as pyroomacoustics' ShoeBox, computed here in a few vectorised lines because building a
    ShoeBox costs ~1 ms per room in Python), each image a Hann-windowed-sinc fractional
    delay as in pyroomacoustics; tests/test_rir.py checks the result against
    ShoeBox.compute_rir. Rows are zero-padded to a common length.
    """
    dims, rt60 = room["dimensions"], room["rt60"]
    absorption, sabine_order = pra.inverse_sabine(rt60, dims)
    order = min(max_order, sabine_order)
    positions = [room["talker"], *room["noise_sources"]]
    mic = np.asarray(room["microphone"], np.float64)[:, None]
    delays, amplitudes, rows = [], [], []
    for k, position in enumerate(positions):
        images, damping = image_sources(dims, position, order, absorption)
        distance = np.linalg.norm(images - mic, axis=0)
        delays.append(distance / SPEED_OF_SOUND * RATE)
        amplitudes.append(damping / distance)  # pyroomacoustics' convention: no 1/(4 pi)
        rows.append(np.full(distance.size, k))
    delays, amplitudes, rows = np.concatenate(delays), np.concatenate(amplitudes), np.concatenate(rows)
    early_end = np.ceil(np.array([delays[rows == k].max() for k in range(len(positions))]) + _FILTER_OFFSET)
    direct_amplitude = np.array([amplitudes[rows == k].max() for k in range(len(positions))])
    out = np.zeros((len(positions), int(early_end.max() + rt60 * RATE) + _FILTER_OFFSET + 2))
    image_source_rir(out, rows, delays, amplitudes)
    _add_tails(
        out,
        early_end.astype(np.int64),
        direct_amplitude,
        rt60,
        float(np.prod(dims)),
        np.random.default_rng(room["tail_seed"]),
    )
    return out[:, : int(np.max(np.nonzero(np.any(out != 0, axis=0)))) + 1]


def image_source_rir(out: np.ndarray, rows: np.ndarray, delays: np.ndarray, amplitudes: np.ndarray) -> None:
    """Adds fractionally delayed impulses into `out[rows]`; delays in samples (before the filter offset)."""
    n = np.arange(-_FILTER_OFFSET, _FILTER_OFFSET + 1)  # filter support around each arrival
    integer = np.floor(delays).astype(np.int64)
    t = n[None, :] - (delays - integer)[:, None]
    window = 0.5 + 0.5 * np.cos(np.pi * t / _FILTER_OFFSET)  # np.hanning(taps), as pyroomacoustics
    flat = rows[:, None] * out.shape[1] + integer[:, None] + n[None, :] + _FILTER_OFFSET
    # bincount sums colliding indices like np.add.at, an order of magnitude faster.
    out += np.bincount(flat.ravel(), (amplitudes[:, None] * np.sinc(t) * window).ravel(), out.size).reshape(out.shape)


def _add_tails(
    out: np.ndarray, start: np.ndarray, direct: np.ndarray, rt60: float, volume: float, rng: np.random.Generator
) -> None:
    """Adds the diffuse late reverberation from `start` (per row) on.

    Image sources of a shoebox arrive at a rate of 4 pi c^3 t^2 / V per second, each with
    energy (decay / (c t))^2 in pyroomacoustics' amplitude convention, so the expected
    squared RIR is 4 pi c / (V fs) per sample times a decay of 60 dB per RT60, whatever the
    order. Gaussian noise with that envelope stands in for the orders not computed. A tail
    stops 60 dB below its row's direct sound: further down lies below 16-bit resolution for
    any SNR we mix at. (tests/test_rir.py checks the level against a full-order ISM.)
    """
    n = np.arange(out.shape[1], dtype=np.float64) - _FILTER_OFFSET  # samples since emission
    envelope = np.sqrt(4 * np.pi * SPEED_OF_SOUND / (volume * RATE)) * np.exp(-6.9078 * n / (rt60 * RATE))
    noise = rng.standard_normal(out.shape, dtype=np.float32)
    for row, s, floor, z in zip(out, start, direct * 1e-3, noise):
        stop = s + int(np.searchsorted(-envelope[s:], -floor))
        row[s:stop] += envelope[s:stop] * z[s:stop]
