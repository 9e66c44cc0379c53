import numpy as np
import pyroomacoustics as pra

from data_prep import rir
from tsasr.recipes.asr import base_config


def _rooms(n, sources=2):
    rng = np.random.default_rng(1)
    ranges = base_config().noisify.rooms.to_dict()
    return [rir.draw_room(rng, ranges, sources) for _ in range(n)]


def test_early_part_matches_pyroomacoustics():
    for room in _rooms(4):
        ours = rir.impulse_responses(room, 3)
        for k, ref in enumerate(_reference(room)):
            early = len(ref) - 41  # before our stochastic tail begins
            corr = np.corrcoef(ref[:early], ours[k, :early])[0, 1]
            assert corr > 0.99, corr
            assert np.argmax(np.abs(ours[k])) == np.argmax(np.abs(ref))


def test_image_sources_match_pyroomacoustics():
    for room in _rooms(3):
        absorption, _ = pra.inverse_sabine(room["rt60"], room["dimensions"])
        shoebox = pra.ShoeBox(
            room["dimensions"], fs=16000, materials=pra.Material(absorption), max_order=3, air_absorption=False
        )
        shoebox.add_source(room["talker"])
        shoebox.add_microphone(room["microphone"])
        shoebox.image_source_model()
        ref_images, ref_damping = shoebox.sources[0].images, shoebox.sources[0].damping[0]
        images, damping = rir.image_sources(room["dimensions"], room["talker"], 3, absorption)
        assert images.shape == ref_images.shape
        key = lambda imgs: np.lexsort(np.round(imgs, 6))  # noqa: E731
        np.testing.assert_allclose(images[:, key(images)], ref_images[:, key(ref_images)], atol=1e-9)
        np.testing.assert_allclose(damping[key(images)], ref_damping[key(ref_images)], rtol=1e-6)  # pra: float32


def test_direct_path_is_where_predicted():
    for room in _rooms(5):
        h = rir.impulse_responses(room, 3)
        assert abs(np.argmax(np.abs(h[0])) - rir.direct_path_delay(room, room["talker"])) <= 1


def _reference(room):
    absorption, _ = pra.inverse_sabine(room["rt60"], room["dimensions"])
    reference = pra.ShoeBox(
        room["dimensions"], fs=16000, materials=pra.Material(absorption), max_order=3, air_absorption=False
    )
    for s in [room["talker"], *room["noise_sources"]]:
        reference.add_source(s)
    reference.add_microphone(room["microphone"])
    reference.compute_rir()
    return reference.rir[0]


def test_tail_decays_at_the_drawn_rt60():
    """Energy in 10 ms windows of the stochastic tail falls 60 dB per RT60 (least squares)."""
    rng = np.random.default_rng(2)
    ranges = dict(base_config().noisify.rooms.to_dict(), rt60=(0.35, 0.6))  # tails long enough to fit
    for room in [rir.draw_room(rng, ranges, 0) for _ in range(6)]:
        h = rir.impulse_responses(room, 3)[0]
        start = len(_reference(room)[0])  # the image sources end here
        windows = h[start : start + (len(h) - start) // 160 * 160].reshape(-1, 160)
        assert len(windows) >= 5
        level_db = 10 * np.log10(np.mean(windows**2, axis=1))
        slope = np.polyfit(np.arange(len(level_db)) * 0.01, level_db, 1)[0]  # dB per second
        assert abs(-60 / slope - room["rt60"]) < 0.15 * room["rt60"], (-60 / slope, room["rt60"])


def test_hybrid_matches_a_full_order_image_source_model():
    """Direct-to-reverberant ratio within 1 dB of pyroomacoustics at full Sabine order."""
    rng = np.random.default_rng(5)
    ranges = dict(base_config().noisify.rooms.to_dict(), rt60=(0.15, 0.3))  # keeps the full ISM fast
    for _ in range(4):
        room = rir.draw_room(rng, ranges, 0)
        absorption, order = pra.inverse_sabine(room["rt60"], room["dimensions"])
        full = pra.ShoeBox(
            room["dimensions"], fs=16000, materials=pra.Material(absorption), max_order=order, air_absorption=False
        )
        full.add_source(room["talker"])
        full.add_microphone(room["microphone"])
        full.compute_rir()
        split = int(rir.direct_path_delay(room, room["talker"])) + 40  # 2.5 ms after the direct sound

        def drr(h):
            return 10 * np.log10(np.sum(h[:split] ** 2) / np.sum(h[split:] ** 2))

        assert abs(drr(rir.impulse_responses(room, 3)[0]) - drr(full.rir[0][0])) < 1.0


def test_rooms_keep_everything_inside():
    for room in _rooms(50, sources=3):
        for p in [room["microphone"], room["talker"], *room["noise_sources"]]:
            assert all(0 < v < d for v, d in zip(p, room["dimensions"]))


def test_same_room_same_rirs():
    room = _rooms(1)[0]
    assert np.array_equal(rir.impulse_responses(room, 3), rir.impulse_responses(room, 3))


def test_inverse_sabine_is_pyroomacoustics():
    rng = np.random.default_rng(7)
    config = base_config().noisify
    for ranges in (config.rooms.to_dict(), config.rerecorded_rooms.to_dict()):
        for room in [rir.draw_room(rng, ranges, 1) for _ in range(200)]:
            assert rir.inverse_sabine(room["rt60"], room["dimensions"]) == pra.inverse_sabine(
                room["rt60"], room["dimensions"]
            )


def test_uniform_draws_what_generator_uniform_draws():
    ours, theirs = np.random.default_rng(11), np.random.default_rng(11)
    for bounds in [(0.0, 1.0), (0.3, 5.2), (-6.0, 6.0), (0, 2 * np.pi), (2.4, 2.4), (1.2, 1.8)] * 200:
        assert rir.uniform(ours, bounds) == theirs.uniform(*bounds)


def test_fractional_delay_filter_is_the_windowed_sinc():
    """The angle-sum form of the filter equals pyroomacoustics' sinc times Hann window, whole-sample delays included."""
    rng = np.random.default_rng(3)
    offset = rir._FILTER_OFFSET
    frac = np.concatenate([rng.uniform(0, 1, 300), [0.0, 0.5, 1 - 1e-12]])
    amplitudes = rng.uniform(0.05, 2.0, frac.size)
    width = 2 * offset + 1
    start = np.arange(frac.size) * width  # one row per impulse, no overlaps
    got = rir.image_source_rir(start, frac, amplitudes, (frac.size, width))
    t = np.arange(-offset, offset + 1)[None, :] - frac[:, None]
    expected = amplitudes[:, None] * np.sinc(t) * (0.5 + 0.5 * np.cos(np.pi * t / offset))
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-13)


def _plain_early_part(room, width, max_order=3):
    """Per source: the image-source part summed image by image with np.sinc, where it ends, its direct amplitude."""
    absorption, order = pra.inverse_sabine(room["rt60"], room["dimensions"])
    offset = rir._FILTER_OFFSET
    taps = np.arange(-offset, offset + 1)
    rows, ends, directs = [], [], []
    for source in [room["talker"], *room["noise_sources"]]:
        images, damping = rir.image_sources(room["dimensions"], source, min(max_order, order), absorption)
        distance = np.linalg.norm(images - np.asarray(room["microphone"])[:, None], axis=0)
        delays = distance / rir.SPEED_OF_SOUND * rir.RATE
        row = np.zeros(width)
        for d, a in zip(delays, damping / distance):
            t = taps - (d - np.floor(d))
            row[int(d) : int(d) + 2 * offset + 1] += a * np.sinc(t) * (0.5 + 0.5 * np.cos(np.pi * t / offset))
        rows.append(row)
        ends.append(int(np.ceil(delays.max() + offset)))
        directs.append(np.max(damping / distance))
    return rows, ends, directs


def test_rirs_match_the_straightforward_computation():
    """The early part is the plain per-image sum; each tail runs from the end of its image sources
    until its envelope falls to 1e-3 of the direct sound, filled with unit Gaussian noise; rows
    are trimmed to the last non-zero sample."""
    for room in _rooms(12, sources=3):
        h = rir.impulse_responses(room, 3)
        rate, offset = rir.RATE, rir._FILTER_OFFSET
        rows, ends, directs = _plain_early_part(room, int(room["rt60"] * rate) + 1000)
        width = int(max(ends) + room["rt60"] * rate) + offset + 2
        n = np.arange(width) - offset
        volume = np.prod(room["dimensions"])
        envelope = np.sqrt(4 * np.pi * rir.SPEED_OF_SOUND / (volume * rate)) * np.exp(
            -6.9078 * n / (room["rt60"] * rate)
        )
        extents = []
        for k, (row, end, direct) in enumerate(zip(rows, ends, directs)):
            below = np.nonzero(envelope[end:] <= 1e-3 * direct)[0]
            stop = end + int(below[0]) if below.size else width
            early = np.zeros(max(h.shape[1], row.size))
            early[: row.size] = row
            ours = np.zeros_like(early)
            ours[: h.shape[1]] = h[k]
            scale = np.abs(row).max()
            np.testing.assert_allclose(ours[:end], early[:end], rtol=0, atol=1e-12 * scale)
            np.testing.assert_allclose(ours[stop:], early[stop:], rtol=0, atol=1e-12 * scale)
            noise = (ours[end:stop] - early[end:stop]) / envelope[end:stop]
            assert np.all(noise != 0)
            if noise.size > 200:
                assert 0.85 < np.std(noise) < 1.15 and abs(np.mean(noise)) < 0.2
            extents.append(max(stop, int(np.max(np.nonzero(row))) + 1))
        assert h.shape[1] == max(extents)
