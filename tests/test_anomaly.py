"""The anomaly recipe (tsasr/recipes/anomaly): metrics against sklearn and by hand, the log-mel
feature against an independent scipy + float64 reference, each loss against numpy, Group
MADE's autoregressive masks, BatchNorm's population statistics, the DCASE layout reader, the
built-in generator's determinism, and a tiny end-to-end run through tsasr.recipe.run."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal
from sklearn.metrics import roc_auc_score

from tsasr import recipe as recipe_lib
from tsasr.recipes.anomaly import data, features, losses, metrics, models, stages

# ------------------------------------------------------------------------------- metrics


def test_auc_and_pauc_match_sklearn_with_and_without_ties():
    rng = np.random.default_rng(0)
    for case in range(200):
        n = int(rng.integers(4, 50))
        labels = rng.integers(0, 2, n)
        labels[:2] = (0, 1)
        scores = rng.integers(0, 5, n).astype(float) if case % 2 else rng.normal(size=n)
        assert metrics.auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
        for max_fpr in (0.1, 0.25, 0.5):
            assert metrics.pauc(labels, scores, max_fpr) == pytest.approx(
                roc_auc_score(labels, scores, max_fpr=max_fpr), abs=1e-12
            )


def test_auc_and_pauc_by_hand():
    labels, scores = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    # ROC: (0, 0) -> (0, 0.5) -> (0.5, 0.5) -> (0.5, 1) -> (1, 1): AUC = 0.25 + 0.5 = 0.75
    assert metrics.auc(labels, scores) == pytest.approx(0.75)
    # area up to FPR 0.5 = 0.25; McClish: 0.5 (1 + (0.25 - 0.125) / (0.5 - 0.125)) = 2/3
    assert metrics.pauc(labels, scores, 0.5) == pytest.approx(2 / 3)
    # up to FPR 0.1 the curve sits at TPR 0.5: area 0.05; 0.5 (1 + (0.05 - 0.005) / 0.095)
    assert metrics.pauc(labels, scores, 0.1) == pytest.approx(0.5 * (1 + 0.045 / 0.095))


def test_per_type_averages_ids_and_brackets_with_intervals():
    rng = np.random.default_rng(1)
    clips = {}
    for i in range(3):
        labels = np.r_[np.zeros(20), np.ones(20)]
        clips[f"id_{i:02d}"] = (labels, rng.normal(size=40) + labels * (i + 0.5))
    out = metrics.per_type(clips, replications=200)
    expected = np.mean([100 * roc_auc_score(*clips[k]) for k in clips])
    assert out["auc"] == pytest.approx(expected)
    assert out["pauc"] == pytest.approx(np.mean([100 * roc_auc_score(*clips[k], max_fpr=0.1) for k in clips]))
    assert out["auc_ci"][0] <= out["auc"] <= out["auc_ci"][1]
    with pytest.raises(ValueError, match="both classes"):
        metrics.auc([0, 0], [1.0, 2.0])


# ------------------------------------------------------------------------------- features


def _reference_mel(rate=16000, n_fft=1024, n_mels=64):
    """Slaney mel filters written out from the definition, loop by loop, in float64."""

    def mel(f):
        return f / (200 / 3) if f < 1000 else 15 + 27 * np.log(f / 1000) / np.log(6.4)

    def hz(m):
        return m * (200 / 3) if m < 15 else 1000 * np.exp((m - 15) * np.log(6.4) / 27)

    edges = [hz(mel(0) + (mel(rate / 2) - mel(0)) * i / (n_mels + 1)) for i in range(n_mels + 2)]
    freqs = np.arange(n_fft // 2 + 1) * rate / n_fft
    out = np.zeros((n_mels, freqs.size))
    for m in range(n_mels):
        lo, centre, hi = edges[m : m + 3]
        for k, f in enumerate(freqs):
            rise, fall = (f - lo) / (centre - lo), (hi - f) / (hi - centre)
            out[m, k] = max(0.0, min(rise, fall)) * 2 / (hi - lo)
    return out


def test_log_mel_matches_scipy_stft_and_a_reference_filterbank():
    rng = np.random.default_rng(0)
    t = np.arange(16000 + 123) / 16000
    audio = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)
    np.testing.assert_allclose(features.mel_matrix(), _reference_mel(), rtol=1e-9, atol=1e-12)
    padded = np.pad(audio, 512, mode="reflect")
    _, _, spec = scipy.signal.stft(
        padded, 16000, window="hann", nperseg=1024, noverlap=512, boundary=None, padded=False, detrend=False
    )
    power = np.abs(spec * np.hanning(1025)[:-1].sum()) ** 2  # undo scipy's 1 / sum(window) scaling
    reference = 10 * np.log10(_reference_mel() @ power + np.finfo(float).eps).T
    ours = features.log_mel(audio)
    assert ours.shape == (features.num_frames(audio.size), 64) == reference.shape
    np.testing.assert_allclose(ours, reference, atol=2e-3)


def test_stack_frames_is_the_baselines_layout():
    x = np.arange(7 * 3, dtype=np.float32).reshape(7, 3)
    stacked = features.stack_frames(x, 5)
    assert stacked.shape == (3, 15)
    np.testing.assert_array_equal(stacked[1], x[1:6].reshape(-1))
    np.testing.assert_array_equal(np.asarray(features.stack_frames(jnp.asarray(x), 5)), stacked)
    paddings = np.array([0, 0, 0, 0, 0, 0, 1], np.float32)
    np.testing.assert_array_equal(features.stack_paddings(paddings, 5), [0, 0, 1])


# ------------------------------------------------------------------------------- losses


def test_losses_match_numpy_float64():
    rng = np.random.default_rng(0)
    x, y, log_scale = (rng.normal(size=(2, 5, 7)) for _ in range(3))
    np.testing.assert_allclose(losses.squared_error(jnp.asarray(x), jnp.asarray(y)), ((x - y) ** 2).mean(-1), rtol=1e-5)
    nll = 0.5 * np.log(2 * np.pi) + log_scale + 0.5 * ((x - y) / np.exp(log_scale)) ** 2
    np.testing.assert_allclose(
        losses.gaussian_nll(jnp.asarray(x), jnp.asarray(y), jnp.asarray(log_scale)), nll.mean(-1), rtol=1e-5
    )
    logits, labels = rng.normal(size=(4, 6)), rng.integers(0, 6, 4)
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(
        losses.id_nll(jnp.asarray(logits), jnp.asarray(labels)), -log_softmax[np.arange(4), labels], rtol=1e-5
    )
    values, paddings = rng.normal(size=(3, 4)), (rng.random((3, 4)) < 0.3).astype(float)
    mean, count = losses.masked_mean(jnp.asarray(values), jnp.asarray(paddings))
    assert float(count) == (paddings == 0).sum()
    assert float(mean) == pytest.approx(values[paddings == 0].mean(), rel=1e-5)


def test_ae_loss_reads_its_members_bands_and_skips_padding():
    model = models.DenseAE(models.AEConfig(hidden=16, bottleneck=4, layers=1))
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 12, 64)), jnp.zeros((1, 12)))["params"]
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(2, 9, 3 * 64)).astype(np.float32)
    paddings = np.zeros((2, 9), np.float32)
    paddings[1, 7:] = 1
    batch = {"features": feats, "feature_paddings": paddings, "member": np.int32(1)}
    loss, _, weight = losses.make_ae_loss(model)(params, batch, jax.random.PRNGKey(1), train=True)
    member = feats[..., 64:128]
    out, _ = model.apply({"params": params}, jnp.asarray(member), jnp.asarray(paddings), train=True)
    per = ((np.asarray(out, np.float64) - features.stack_frames(member).astype(np.float64)) ** 2).mean(-1)
    real = features.stack_paddings(paddings) == 0
    assert float(weight) == real.sum() == 5 + 3
    assert float(loss) == pytest.approx(per[real].mean(), rel=1e-5)


def test_classifier_loss_masks_missing_ids():
    logits = jnp.zeros((1, 1, 8))
    masked = losses.mask_missing_ids(logits, 3, 4)
    assert np.isfinite(np.asarray(jax.nn.log_softmax(masked))[0, 0, [0, 1, 2, 4, 5, 6]]).all()
    np.testing.assert_allclose(np.exp(np.asarray(jax.nn.log_softmax(masked)))[0, 0, [3, 7]], 0.0)


# ------------------------------------------------------------------------------- models


def test_group_made_is_autoregressive_over_band_groups():
    config = models.MADEConfig(groups=4, hidden=24, layers=2, context=2, bands=8)
    model = models.GroupMADE(config)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 3, 8)), jnp.zeros((1, 3)))["params"]
    params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(1), p.shape), params)
    groups = models.input_groups(config)  # [16]: group of each stacked input
    np.testing.assert_array_equal(groups, np.tile(np.repeat(np.arange(4), 2), 2))

    def outputs(vector):  # one stacked vector (2 frames x 8 bands) -> 32 outputs
        frames = vector.reshape(1, 2, 8)
        return model.apply({"params": params}, frames, jnp.zeros((1, 2)))[0][0, 0]

    jac = np.asarray(jax.jacobian(outputs)(jnp.asarray(np.random.default_rng(0).normal(size=16), jnp.float32)))
    out_groups = np.concatenate([groups, groups])
    for o, g_out in enumerate(out_groups):
        assert np.all(jac[o, groups >= g_out] == 0), (o, g_out)  # no input of its own group or later
        if g_out > 0:
            assert np.any(jac[o, groups < g_out] != 0)  # and it does see the earlier groups
    assert np.all(jac[out_groups == 0] == 0)  # group 0: an unconditional Gaussian


def test_population_batch_norm_is_batch_norm_with_exact_statistics():
    norm = models.PopulationBatchNorm()
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 3)) * 3 + 1, jnp.float32)
    mask = jnp.asarray([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], jnp.float32)
    variables = norm.init(jax.random.PRNGKey(0), x, mask, False)
    trained = norm.apply(variables, x, mask, True)
    real = np.asarray(x)[np.asarray(mask) == 1]
    expected = (np.asarray(x) - real.mean(0)) / np.sqrt(real.var(0) + 1e-3)
    np.testing.assert_allclose(trained, expected, rtol=1e-4, atol=1e-5)
    _, collected = norm.apply(variables, x, mask, False, collect=True, mutable=["population"])
    inferred = norm.apply({**variables, **collected}, x, mask, False)
    np.testing.assert_allclose(inferred, trained, rtol=1e-5, atol=1e-6)


def test_classifier_windows_cover_every_frame():
    assert models.window_starts(63, 32, 8) == [0, 8, 16, 24, 31]
    assert models.window_starts(20, 32, 8) == [0]
    model = models.IdClassifier(models.ClassifierConfig(num_classes=6, width=8))
    params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 12, 64)), jnp.zeros((1, 12)))
    # jitted: one compilation instead of one per operation
    logits, window_paddings = jax.jit(model.apply)(params, jnp.zeros((2, 63, 64)), jnp.zeros((2, 63)))
    assert logits.shape == (2, 5, 6) and window_paddings.shape == (2, 5)


# ------------------------------------------------------------------------------- data


def _write(path, rate=16000, seconds=0.2, channels=1):
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    audio = 0.1 * np.random.default_rng(0).standard_normal((int(rate * seconds), channels))
    soundfile.write(path, audio if channels > 1 else audio[:, 0], rate)


def test_reader_reads_the_dcase_layout(tmp_path):
    for t in ("fan", "ToyCar"):
        _write(tmp_path / t / "train" / "normal_id_00_00000000.wav")
        _write(tmp_path / t / "train" / "normal_id_02_00000001.wav")
        _write(tmp_path / t / "test" / "normal_id_00_00000000.wav")
        _write(tmp_path / t / "test" / "anomaly_id_02_00000007.wav", rate=8000)
    (tmp_path / "fan" / "train" / "notes.txt").write_text("ignored")
    clips = data.read_layout(tmp_path, ("fan", "ToyCar"))
    assert len(clips) == 8
    anomaly = next(c for c in clips if c["type"] == "fan" and c["label"] == 1)
    assert (anomaly["split"], anomaly["machine_id"], anomaly["name"]) == ("test", 2, "anomaly_id_02_00000007.wav")
    assert data.read_clip(anomaly["path"]).shape == (3200,)  # 8 kHz resampled to 16 kHz
    assert sorted({c["machine_id"] for c in clips}) == [0, 2]


def test_reader_names_the_bad_file(tmp_path):
    _write(tmp_path / "fan" / "train" / "normal_id_00_00000000.wav")
    _write(tmp_path / "fan" / "test" / "normal_00.wav")
    with pytest.raises(ValueError, match=r"normal_00\.wav: name is not"):
        data.read_layout(tmp_path, ("fan",))
    (tmp_path / "fan" / "test" / "normal_00.wav").unlink()
    _write(tmp_path / "fan" / "test" / "normal_id_00_00000001.wav")
    _write(tmp_path / "fan" / "train" / "anomaly_id_00_00000003.wav")
    with pytest.raises(ValueError, match="anomaly_id_00_00000003.wav: an anomalous clip among the training"):
        data.read_layout(tmp_path, ("fan",))
    with pytest.raises(ValueError, match=r"pump/train: missing"):
        data.read_layout(tmp_path, ("pump",))
    _write(tmp_path / "stereo.wav", channels=2)
    with pytest.raises(ValueError, match=r"stereo.wav: has 2 channels"):
        data.read_clip(tmp_path / "stereo.wav")


def test_builtin_clips_are_deterministic_and_ids_differ():
    rir = data.room_response(data.machine_signature(0, "pump", 0)["room"])
    args = dict(seconds=0.5, strength=1.0, snr_db=(0.0, 10.0), rir=rir)
    a = data.synthesize(0, "pump", 0, "train", 3, None, **args)
    b = data.synthesize(0, "pump", 0, "train", 3, None, **args)
    assert a.dtype == np.float32 and a.shape == (8000,) and a.tobytes() == b.tobytes()
    assert data.synthesize(0, "pump", 2, "train", 3, None, **args).tobytes() != a.tobytes()
    faulty = data.synthesize(0, "pump", 0, "train", 3, "bearing", **args)
    assert faulty.tobytes() != a.tobytes() and np.max(np.abs(faulty)) <= 1


def test_ensemble_standardises_per_id_on_training_scores():
    train_ids, test_ids = np.array([0, 0, 2, 2]), np.array([0, 2])
    member = {"train": np.array([1.0, 3.0, 10.0, 30.0]), "test": np.array([5.0, 40.0])}
    out = stages.ensemble_scores({"a": member, "b": member}, train_ids, test_ids)
    np.testing.assert_allclose(out["test"], [(5 - 2) / 1, (40 - 20) / 10])
    np.testing.assert_allclose(out["train"], [-1, 1, -1, 1])


# ------------------------------------------------------------------------------- end to end


def test_tiny_run_through_the_runner(tmp_path):
    recipe = recipe_lib.load("anomaly")
    config = recipe.base_config()
    recipe.tiny(config)
    report = recipe_lib.run(recipe, config, tmp_path)
    assert [s for s in report] == ["machines", "ae_baseline", "id_classifier", "group_made", "score"]
    names = sorted(p.relative_to(tmp_path / "machines").as_posix() for p in (tmp_path / "machines").rglob("*.wav"))
    assert "fan/train/normal_id_00_00000000.wav" in names and "ToyConveyor/test/anomaly_id_01_00000005.wav" in names
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["systems"]) == {"ae_baseline", "id_classifier", "group_made", "ensemble"}
    for entry in results["systems"].values():
        for metric in ("auc", "pauc"):
            assert set(entry[metric]) == set(config.data.types) | {"mean"}
            for condition, value in entry[metric].items():
                low, high = entry["ci"][metric][condition]
                assert 0 <= low <= high <= 100 and 0 <= value <= 100
    assert results["metrics"]["auc"] == {"lower_is_better": False}
    text = recipe_lib.write_report(recipe, config, tmp_path)
    assert "AUC (%) fan" in text and "pAUC (%) ToyConveyor" in text
    markdown = (tmp_path / "results.md").read_text()
    assert "plots/roc_valve.png" in markdown and "per machine ID" in markdown
    assert (tmp_path / "plots" / "roc_fan.png").read_bytes()[:4] == b"\x89PNG"
    again = recipe_lib.run(recipe, config, tmp_path)
    assert {s: r["status"] for s, r in again.items()} == dict.fromkeys(again, "skipped")
