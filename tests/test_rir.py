import numpy as np
import pyroomacoustics as pra

from data_prep import rir
from tsasr.config import base_config


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
