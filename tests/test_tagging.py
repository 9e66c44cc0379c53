"""Recipe `tagging`: losses against float64 numpy, the DCASE micro-AUPRC on a hand-computed case,
the SONYC-UST importer on a directory written here, the corpus's determinism, the models' shapes."""

import csv
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import soundfile

from tsasr.recipes.tagging import config as config_lib
from tsasr.recipes.tagging import corpus, losses, metrics, models

jax.config.update("jax_enable_x64", False)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _bce(logits, targets):
    p = _sigmoid(np.asarray(logits, np.float64))
    return float(np.mean(-(targets * np.log(p) + (1 - targets) * np.log(1 - p))))


def _gram(a):
    g = a @ a.T
    return g / np.linalg.norm(g, axis=1, keepdims=True)


def _resize(g, target):
    """Linear interpolation of a [n, n] matrix to [target, target], rows then columns."""
    n = g.shape[0]
    pos = np.clip((np.arange(target) + 0.5) * n / target - 0.5, 0, n - 1)
    rows = np.stack([np.interp(pos, np.arange(n), g[:, j]) for j in range(n)], axis=1)  # [target, n]
    return np.stack([np.interp(pos, np.arange(n), rows[i]) for i in range(target)], axis=0)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_bce_and_kd_match_numpy(rng):
    z_s, z_t = rng.normal(size=(5, 8)) * 3, rng.normal(size=(5, 8)) * 3
    y = (rng.random((5, 8)) < 0.4).astype(np.float64)
    np.testing.assert_allclose(
        float(losses.bce(jnp.asarray(z_s, jnp.float32), jnp.asarray(y, jnp.float32))), _bce(z_s, y), rtol=1e-5
    )
    for temperature in (1.0, 2.0, 4.0):
        expected = _bce(z_s / temperature, _sigmoid(z_t / temperature))
        got = float(losses.kd(jnp.asarray(z_s, jnp.float32), jnp.asarray(z_t, jnp.float32), temperature))
        np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_sp_matches_numpy(rng):
    s, t = rng.normal(size=(6, 7, 5)), rng.normal(size=(6, 4, 12))  # different layer shapes: SP compares b x b
    fs, ft = s.reshape(6, -1), t.reshape(6, -1)
    expected = np.sum((_gram(ft) - _gram(fs)) ** 2) / 6**2
    got = float(losses.sp(jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32)))
    np.testing.assert_allclose(got, expected, rtol=1e-4)


@pytest.mark.parametrize("student_frames", [10, 21, 5])
def test_iusp_matches_numpy(rng, student_frames):
    b, frames_t = 3, 10
    s, t = rng.normal(size=(b, student_frames, 6)), rng.normal(size=(b, frames_t, 9))
    per_clip = []
    for i in range(b):
        gs = _gram(s[i])
        if student_frames != frames_t:
            gs = _resize(gs, frames_t)
            gs = gs / np.linalg.norm(gs, axis=1, keepdims=True)
        per_clip.append(np.sum((_gram(t[i]) - gs) ** 2) / frames_t**2)
    got = float(losses.iusp(jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32)))
    np.testing.assert_allclose(got, np.mean(per_clip), rtol=1e-4)
    # identical activations (same frame count): zero; the loss is invariant to the layer's width
    assert float(losses.iusp(jnp.asarray(t, jnp.float32), jnp.asarray(t, jnp.float32))) < 1e-10


def test_micro_auprc_hand_computed():
    truth = np.array([[1, 0], [0, 1]])
    scores = np.array([[0.9, 0.6], [0.4, 0.2]])
    # thresholds .2 .4 .6 .9 -> (TP, FP) pooled: (2, 2) (1, 2) (1, 1) (1, 0); FN = 2 - TP
    # (R, P): (1, 0) + (1, .5) (.5, 1/3) (.5, .5) (.5, 1) + (0, 1):
    # trapezoids: 0 + .5 (.5 + 1/3) / 2 + 0 + 0 + .5 (1 + 1) / 2 = 5/24 + 12/24 = 17/24
    assert metrics.micro_auprc(scores, truth) == pytest.approx(17 / 24)
    # sklearn's micro AP is a different number: .5 * 1 + .5 * 2/4 = 0.75
    assert metrics.sklearn_micro_ap(scores, truth) == pytest.approx(0.75)
    # class 0: one positive, ranked first -> 1; class 1: thresholds .2 .6 -> (R, P) (1, .5) (0, 0):
    # (1, 0) (1, .5) (0, 0) (0, 1): 0 + .5 * .5 + 0 = .25; macro = (1 + .25) / 2
    assert metrics.macro_auprc(scores, truth) == pytest.approx(0.625)
    # a score below the 0.01 floor is never a threshold: the positive at 0.005 is never found (area 0),
    # where a sweep down to it would give (1, 0) (1, .5) (0, 0) (0, 1): 0.25
    assert metrics.micro_auprc(np.array([[0.9, 0.005]]), np.array([[0, 1]])) == pytest.approx(0.0)
    assert metrics.micro_auprc(np.array([[0.9, 0.005]]), np.array([[0, 1]]), min_threshold=0.0) == pytest.approx(0.25)


def test_bootstrap_interval_brackets_the_value(rng):
    truth = (rng.random((60, 8)) < 0.3).astype(int)
    scores = np.clip(truth * 0.4 + rng.random((60, 8)) * 0.6, 0, 1)
    draws = metrics.bootstrap_draws(60, 200, 0)
    low, high = metrics.interval(metrics.bootstrap(metrics.micro_auprc, scores, truth, draws))
    assert low <= metrics.micro_auprc(scores, truth) <= high
    np.testing.assert_array_equal(draws, metrics.bootstrap_draws(60, 200, 0))


def _write_sonyc(root, rows, audio_names):
    (root / "audio").mkdir(parents=True, exist_ok=True)
    for name in audio_names:
        soundfile.write(root / "audio" / name, np.zeros(1600, np.float32), 16000)
    columns = ["split", "sensor_id", "audio_filename", "annotator_id"] + corpus.coarse_columns()
    with open(root / "annotations.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)


def test_sonyc_importer_agreement_and_splits(tmp_path):
    z = [0] * 8
    rows = [
        # train clip a: 3 annotators; engine 2/3 (present), dog 1/3 (absent)
        ["train", "12", "a.wav", "5", *([1] + z[1:7] + [1])],
        ["train", "12", "a.wav", "6", *([1] + z[1:])],
        ["train", "12", "a.wav", "7", *z],
        # validate clip b: volunteers say music, SONYC's verified annotator 0 says human-voice
        ["validate", "30", "b.wav", "8", *(z[:5] + [1] + z[6:])],
        ["validate", "30", "b.wav", "0", *(z[:6] + [1] + z[7:])],
        # an unused split is skipped
        ["test", "31", "c.wav", "9", *z],
    ]
    _write_sonyc(tmp_path, rows, ["a.wav", "b.wav"])
    clips = {c["id"]: c for c in corpus.read_sonyc(tmp_path)}
    assert set(clips) == {"a", "b"}
    np.testing.assert_array_equal(clips["a"]["labels"], [1, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(clips["b"]["labels"], [0, 0, 0, 0, 0, 0, 1, 0])
    assert (clips["a"]["split"], clips["b"]["split"], clips["a"]["sensor"]) == ("train", "test", "12")
    # a stricter agreement drops engine (2/3 < 0.7)
    strict = {c["id"]: c for c in corpus.read_sonyc(tmp_path, agreement=0.7)}
    assert strict["a"]["labels"].sum() == 0


def test_sonyc_importer_bad_input_names_the_file(tmp_path):
    with pytest.raises(ValueError, match="annotations.csv: no such file"):
        corpus.read_sonyc(tmp_path)
    _write_sonyc(tmp_path, [["train", "1", "missing.wav", "1", *([0] * 8)]], [])
    with pytest.raises(ValueError, match=r"annotations.csv: audio 'missing.wav' not found"):
        corpus.read_sonyc(tmp_path)
    _write_sonyc(tmp_path, [["train", "1", "x.wav", "1", *([2] + [0] * 7)]], ["x.wav"])
    with pytest.raises(ValueError, match=r"annotations.csv: line 2: presence values must be 0 or 1"):
        corpus.read_sonyc(tmp_path)
    (tmp_path / "annotations.csv").write_text("split,audio_filename\ntrain,x.wav\n")
    with pytest.raises(ValueError, match=r"annotations.csv: missing columns \['sensor_id'"):
        corpus.read_sonyc(tmp_path)


_HASH_CORPUS = """
import hashlib
from tsasr.recipes.tagging import config, corpus
cfg = config.base_config().data
cfg.seconds, cfg.num_sensors, cfg.test_sensors, cfg.clips_per_sensor, cfg.speech_bank = 0.5, 3, 1, 3, 2
digest = hashlib.sha256()
for c in corpus.builtin(cfg, 3):
    digest.update(c["id"].encode() + c["audio"].tobytes() + c["labels"].tobytes())
print(digest.hexdigest())
"""


def test_builtin_corpus_is_a_function_of_the_seed():
    """Same seed, same bytes, in every process (espeak-ng's state carries over between utterances
    of one process, so the bank is synthesised once per corpus, in a fixed order)."""
    runs = [
        subprocess.run([sys.executable, "-c", _HASH_CORPUS], capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    ]
    assert runs[0] == runs[1] and len(runs[0].strip()) == 64
    cfg = config_lib.base_config().data
    cfg.seconds, cfg.num_sensors, cfg.test_sensors, cfg.clips_per_sensor, cfg.speech_bank = 0.5, 3, 1, 3, 1
    clips = corpus.builtin(cfg, 3)
    assert {c["split"] for c in clips} == {"train", "test"}
    assert all(c["audio"].shape == (8000,) and np.all(np.abs(c["audio"]) <= 1.0) for c in clips)
    # sensors do not cross splits; test labels are the truth
    assert len({(c["sensor"], c["split"]) for c in clips}) == 3
    assert all(np.array_equal(c["labels"], c["truth"]) for c in clips if c["split"] == "test")


def test_annotate_is_a_majority_vote():
    rng = np.random.default_rng(0)
    truth = np.array([1, 0] * 4, np.float32)
    assert np.array_equal(corpus.annotate(rng, truth, 3, 0.0, 0.0), truth)
    noisy = np.stack([corpus.annotate(rng, truth, 3, 0.3, 0.1) for _ in range(2000)])
    # P(majority misses) = 3 p^2 (1 - p) + p^3 at p = 0.3: 0.216
    assert noisy[:, 0].mean() == pytest.approx(1 - 0.216, abs=0.03)


@pytest.mark.parametrize(
    "kind,channels,lstm,frames_out",
    [("cnn", (4, 8, 16, 32), 0, 24), ("cnn", (2, 4), 0, 99), ("lstm", (3,), 5, 99)],
)
def test_models_keep_a_frame_axis(kind, channels, lstm, frames_out):
    model = models.build(kind, channels, lstm)
    x, p = jnp.zeros((2, 198, 64)), jnp.zeros((2, 198))
    params = jax.jit(model.init)(  # jitted: one compilation instead of one per operation
        {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(0)}, jnp.zeros((1, 12, 64)), jnp.zeros((1, 12))
    )
    apply = jax.jit(lambda params, x, p: model.apply(params, x, p, train=True, rngs={"dropout": jax.random.PRNGKey(1)}))
    outputs, paddings = apply(params, x, p)
    assert outputs["logits"].shape == (2, 8)
    assert outputs["layer"].shape[:2] == (2, frames_out) and paddings.shape == (2, frames_out)


def test_member_weights_select_the_methods():
    from tsasr.recipes.tagging import stages

    config = config_lib.base_config()
    inputs = stages.member_inputs(config)
    np.testing.assert_array_equal(inputs["w_kd"], [0, 1.5, 1.5, 1.5])
    np.testing.assert_array_equal(inputs["w_sp"], [0, 0, 10, 0])
    np.testing.assert_array_equal(inputs["w_iusp"], [0, 0, 0, 10])
    config.student.methods = ("bce", "nope")
    with pytest.raises(ValueError, match="unknown \\['nope'\\]"):
        stages.member_inputs(config)
    assert isinstance(config, ml_collections.ConfigDict)
