"""Recipe `wakeword`: the streaming detector against an offline reference, the DET metrics
against hand-computed cases, the network's latency, the user-recordings importer, and the
stage-2 features."""

import json

import numpy as np
import pytest

from tsasr.recipes.wakeword import corpus, det, detector, frontends, stage2


def test_streaming_score_matches_the_offline_reference():
    rng = np.random.default_rng(0)
    for states, frames in ((1, 9), (3, 14), (4, 12)):
        g = rng.normal(size=(frames, states)).astype(np.float32)
        reference = detector.offline_scores(g)
        whole, _ = detector.streaming_scores(g)
        finite = np.isfinite(reference)
        np.testing.assert_allclose(whole[finite], reference[finite], rtol=1e-5, atol=1e-5)
        assert np.all(whole[~finite] < -1e29)  # fewer frames than states: no wake-word path yet
        for chunk in (1, 4, 5):  # fed in chunks, as a device would stream it: the same scores
            chunked, _ = detector.streaming_scores(g, chunk=chunk)
            np.testing.assert_allclose(chunked, whole, rtol=0, atol=0)


def test_backtrack_finds_the_planted_wake_word():
    g = np.full((20, 3), -5.0, np.float32)
    g[6:9, 0] = g[9:11, 1] = g[11:15, 2] = 3.0
    scores, back = detector.streaming_scores(g)
    end = int(np.argmax(scores))
    assert end == 14 and scores[end] == pytest.approx(27.0)
    assert detector.backtrack(back, end) == [(6, 9), (9, 11), (11, 15)]


def test_the_score_sees_no_future_frame():
    g = np.random.default_rng(1).normal(size=(30, 3)).astype(np.float32)
    changed = g.copy()
    changed[20:] += 10.0
    a, _ = detector.streaming_scores(g)
    b, _ = detector.streaming_scores(changed)
    np.testing.assert_array_equal(a[:20], b[:20])


def test_network_latency_is_its_right_context():
    import jax

    cfg = frontends.TdbHighwayConfig(
        num_targets=5, input_dim=7, bottleneck=4, window=(-3, 0, 2), hidden=8, highway_layers=1
    )
    model = frontends.TdbHighway(cfg)
    x = np.random.default_rng(2).normal(size=(1, 30, 7)).astype(np.float32)
    p = np.zeros((1, 30), np.float32)
    params = model.init(jax.random.PRNGKey(0), x, p)["params"]
    y = np.asarray(model.apply({"params": params}, x, p)[0])
    x2 = x.copy()
    x2[:, 20:] += 3.0
    y2 = np.asarray(model.apply({"params": params}, x2, p)[0])
    np.testing.assert_allclose(y[:, :18], y2[:, :18], atol=1e-6)  # frame t reads up to t + 2
    assert not np.allclose(y[:, 18], y2[:, 18])
    assert frontends.num_params(cfg) == sum(v.size for v in jax.tree.leaves(params))


def test_front_ends_have_matched_parameter_budgets():
    class Net:
        bottleneck, window, hidden, highway_layers = 24, (-12, -8, -4, -2, 0, 2, 4), 64, 2

    dft = frontends.model_config("dft", 60, Net)
    lfbe = frontends.model_config("lfbe", 60, Net)
    assert lfbe.input_dim == 64 and dft.input_dim == 257 and lfbe.bottleneck > dft.bottleneck
    assert abs(frontends.num_params(lfbe) - frontends.num_params(dft)) / frontends.num_params(dft) < 0.02


def test_alarms_are_debounced():
    scores = np.array([0, 5, 5, 5, 0, 0, 5, 0, 1, 5], float)
    assert det.alarm_frames(scores, 4.0, 3) == [1, 6, 9]
    assert det.alarm_frames(scores, 4.0, 6) == [1, 9]
    # >= 0.5 at frames 1, 2, 3, 6, 8, 9: alarms at 1, 6 (1 + 3 <= 6) and 9 (6 + 3 <= 9); 8 is debounced
    np.testing.assert_array_equal(det.count_alarms(scores, np.array([0.5, 4.0, 6.0]), 3), [3, 3, 0])


def test_det_metrics_on_a_hand_computed_case():
    # 4 positives with best scores 1, 2, 3, 4; two negative streams of half an hour each.
    best = np.array([1.0, 2.0, 3.0, 4.0])
    thresholds = det.thresholds_for(best)
    np.testing.assert_array_equal(thresholds, [1, 2, 3, 4, np.inf])
    alarms = np.array([[3, 2, 1, 0, 0], [2, 1, 0, 0, 0]])  # per stream, per threshold
    curve = det.det_curve(best, alarms, [0.5, 0.5], thresholds)
    np.testing.assert_allclose(curve.frr, [0.0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(curve.fa_per_hour, [5.0, 3.0, 1.0, 0.0, 0.0])
    assert det.frr_at_fa(curve, 1.0) == pytest.approx(50.0)
    assert det.frr_at_fa(curve, 2.9) == pytest.approx(50.0)
    assert det.frr_at_fa(curve, 3.0) == pytest.approx(25.0)
    assert det.fa_per_hour_at_frr(curve, 25.0) == pytest.approx(3.0)
    assert det.fa_per_hour_at_frr(curve, 10.0) == pytest.approx(5.0)
    # DET lower envelope over [0, 4] FA/h: 75 % on [0, 1), 50 % on [1, 3), 25 % on [3, 4]
    # -> (0.75 * 1 + 0.5 * 2 + 0.25 * 1) / 4 = 0.5
    assert det.det_area(curve, 4.0) == pytest.approx(50.0)
    # over [0, 6]: ... + 25 % on [3, 5), 0 % on [5, 6] -> (0.75 + 1.0 + 0.5 + 0) / 6
    assert det.det_area(curve, 6.0) == pytest.approx(100 * 2.25 / 6)
    unreachable = det.det_curve(np.array([-np.inf, 1.0]), np.zeros((1, 2)), [1.0], det.thresholds_for([-np.inf, 1.0]))
    assert np.isnan(det.fa_per_hour_at_frr(unreachable, 10.0))


def test_bootstrap_intervals_hold_the_estimate():
    rng = np.random.default_rng(3)
    best = rng.normal(2, 1, 50)
    thresholds = det.thresholds_for(best)
    streams = [rng.normal(0, 1, 2000) for _ in range(6)]
    alarms = np.stack([det.count_alarms(s, thresholds, 50) for s in streams])
    curve = det.det_curve(best, alarms, [2000 / 360000] * 6, thresholds)
    values = det.summary(curve, 5.0, 5.0, 20.0)
    intervals = det.bootstrap(curve, 5.0, 5.0, 20.0, 100, 0)
    for name, value in values.items():
        low, high = intervals[name]
        assert low <= value + 1e-9 and value <= high + 1e-9, (name, low, value, high)


def _tone(path, seconds):
    from tsasr import workdir as wd

    wd.write_audio(path, (0.1 * np.sin(np.arange(int(16000 * seconds)) * 0.05)).astype(np.float32))


def test_importer_reads_a_users_recordings(tmp_path):
    _tone(tmp_path / "a.wav", 2.0)
    _tone(tmp_path / "b.wav", 3.0)
    lines = [
        {"id": "a", "audio": "a.wav", "wake_start": 0.5, "wake_end": 1.1, "speaker": "me"},
        {"id": "b", "audio": str(tmp_path / "b.wav")},
    ]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    records = corpus.import_recordings(tmp_path / "m.jsonl")
    assert [r["kind"] for r in records] == ["positive", "stream"]
    assert records[0]["wake_end"] == 1.1 and records[1]["duration"] == pytest.approx(3.0)


@pytest.mark.parametrize(
    "line, message",
    [
        ({"id": "a", "audio": "a.wav", "wake_start": 0.5}, "give both wake_start and wake_end"),
        ({"id": "a", "audio": "a.wav", "wake_start": 1.5, "wake_end": 3.0}, "beyond the end"),
        ({"id": "a", "audio": "a.wav", "wake_start": 1.0, "wake_end": 0.5}, "0 <= start < end"),
        ({"id": "a", "audio": "missing.wav"}, "cannot read"),
        ({"audio": "a.wav"}, "needs a string 'id'"),
    ],
)
def test_importer_names_the_line_and_the_problem(tmp_path, line, message):
    _tone(tmp_path / "a.wav", 2.0)
    (tmp_path / "m.jsonl").write_text(json.dumps(line) + "\n")
    with pytest.raises(corpus.BadInputError) as err:
        corpus.import_recordings(tmp_path / "m.jsonl")
    assert f"{tmp_path / 'm.jsonl'}:1: " in str(err.value) and message in str(err.value)
    assert "\n" not in str(err.value)


def test_wake_word_phones_from_espeak_events():
    events = [
        (0.0, "_"),
        (0.1, "k"),
        (0.15, "@"),
        (0.2, "m"),
        (0.25, "p"),
        (0.3, "j"),
        (0.35, "'u:"),
        (0.45, "t#"),
        (0.5, "3"),
        (0.6, "s"),
    ]
    phones = corpus.wake_phones(events, 1.0)
    assert phones[0] == [0.1, 0.15] and phones[-1] == [0.5, 0.6] and len(phones) == 8
    assert corpus.wake_phones(events[:4], 1.0) is None
    assert corpus.unit_name("'u:") == "u:" and corpus.unit_name("_:") == "sil"


def test_stage2_features_follow_the_alignment():
    keyword = tuple(range(1, 9))
    frames = 40
    lp = np.full((frames, 12), np.log(0.01), np.float32)
    lp[:, 0] = np.log(0.9)
    for p in range(8):
        lp[5 + 3 * p : 8 + 3 * p, 1 + p] = np.log(0.95)
    g = detector.gains(lp, keyword, (0, 9, 10, 11))
    scores, back = detector.streaming_scores(g)
    end = int(np.argmax(scores))
    assert end == 28
    x = stage2.alignment_features(lp, g, back, scores, end, keyword, 1)
    np.testing.assert_array_equal(x[0 : 3 * 8 : 3], [3] * 8)  # each phone lasts its 3 planted frames
    assert x[24] == 24  # the word's duration
