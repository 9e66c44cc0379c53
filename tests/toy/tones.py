"""Recipe `toy.tones`: frame classification of synthetic tones, a recipe written as a user would.

Stages: `tones` (data: clips of tone segments, LFBE features, per-frame class labels),
`classifier` (train: a small TDNN with frame CE, tsasr's loop and checkpoints), `score`
(evaluate: frame accuracy on clean and noisy test clips, with bootstrap intervals).
"""

import functools
import os
import signal
import time

import jax
import ml_collections
import numpy as np

from tsasr import workdir as wd
from tsasr.audio import lfbe
from tsasr.data import batching, padded
from tsasr.evaluate import results
from tsasr.evaluate.report import Metric, ReportSpec
from tsasr.models import build_model
from tsasr.pipeline import Stage
from tsasr.recipe import Recipe
from tsasr.train import checkpoint, loop, step

RATE, FREQUENCIES = 16000, (300.0, 700.0, 1500.0)  # class 0 is silence, class c a tone at FREQUENCIES[c - 1]
KEYS = {"features": batching.FRAME, "labels": batching.FRAME}


def base_config():
    c = ml_collections.ConfigDict()
    c.recipe = "toy.tones"  # this module
    c.name = "tones"  # experiment name
    c.seed = 0  # every draw of the run
    # tests, read by no stage key: send this process `crash_signal` after dispatching training step
    # `crash_at_step`; sleep `step_seconds` after every step (so a signal from outside lands mid-training)
    c.crash_at_step, c.crash_signal, c.step_seconds = -1, "SIGKILL", 0.0
    c.data = ml_collections.ConfigDict({"train_clips": 48, "test_clips": 16, "seconds": 1.0})
    c.classifier = ml_collections.ConfigDict({"hidden": 32, "batch_size": 8, "train": loop.default_config()})
    c.classifier.train.num_steps, c.classifier.train.checkpoint_every = 24, 8
    c.classifier.train.progress_bar, c.classifier.train.log_every = False, 4
    c.score = ml_collections.ConfigDict({"noisy_snr_db": 0.0, "replications": 200})
    return c


def tiny(config):
    config.data.train_clips = 24


def _clip(rng, seconds):
    """Audio [samples] of tone segments and silences, and the class of every sample."""
    classes = np.zeros(int(seconds * RATE), np.int32)
    start = 0
    while start < classes.size:
        length = int(rng.uniform(0.1, 0.3) * RATE)
        classes[start : start + length] = rng.integers(0, len(FREQUENCIES) + 1)
        start += length
    frequency = np.where(classes > 0, np.asarray((0.0,) + FREQUENCIES)[classes], 0.0)
    audio = 0.3 * np.sin(2 * np.pi * np.cumsum(frequency) / RATE) * (classes > 0) + 1e-3 * rng.standard_normal(
        classes.size
    )
    return audio.astype(np.float32), classes


def _features(audios: dict) -> dict:
    out = {}
    for batch, (feats, _) in padded.map_padded(jax.jit(lfbe.lfbe), audios, 8, padded.round_up(RATE)):
        for row, (key, samples) in enumerate(zip(batch.ids, batch.lengths)):
            out[key] = np.asarray(feats)[row, : lfbe.num_frames(samples)]
    return out


def make_tones(config, workdir):
    rng = np.random.default_rng(config.seed)
    for split, count in (("train", config.data.train_clips), ("test", config.data.test_clips)):
        clips = {f"{split}{i:03d}": _clip(rng, config.data.seconds) for i in range(count)}
        features = _features({k: audio for k, (audio, _) in clips.items()})
        centres = lambda n: 200 + 160 * np.arange(n)  # noqa: E731  (the class at each frame's centre)
        labels = {k: classes[centres(len(features[k]))] for k, (_, classes) in clips.items()}
        audio = {k: audio for k, (audio, _) in clips.items()}
        wd.write_npz(
            workdir / "tones" / f"{split}.npz",
            {
                **{f"x/{k}": v for k, v in features.items()},
                **{f"y/{k}": v for k, v in labels.items()},
                **{f"a/{k}": v for k, v in audio.items()},
            },
        )
    return {"train_clips": config.data.train_clips}


def _split(workdir, split):
    data = np.load(workdir / "tones" / f"{split}.npz")
    ids = sorted(k[2:] for k in data.files if k.startswith("x/"))
    return {i: {"features": data[f"x/{i}"], "labels": data[f"y/{i}"], "audio": data[f"a/{i}"]} for i in ids}


@functools.cache
def _model(hidden):
    return build_model({"name": "tdnn", "hidden": hidden, "num_layers": 2, "num_senones": len(FREQUENCIES) + 1})


def train_classifier(config, workdir):
    examples = [
        {"id": i, "features": e["features"], "labels": e["labels"]} for i, e in _split(workdir, "train").items()
    ]
    batcher = batching.Batcher(
        examples, batching.BatchingConfig(config.classifier.batch_size, (128,), config.seed, keys=KEYS)
    )
    train = ml_collections.ConfigDict(config.classifier.train.to_dict())
    train.seed, train.feature_dim = config.seed, 64
    model = _model(config.classifier.hidden)

    def crash(step_index):
        if step_index == config.crash_at_step:
            os.kill(os.getpid(), getattr(signal, config.crash_signal))
        time.sleep(config.step_seconds)

    state = loop.train(
        train, model, step.make_frame_ce_loss(model, "labels"), batcher, str(workdir / "classifier"), after_step=crash
    )
    return {"steps": int(state.step)}


def score(config, workdir):
    model = _model(config.classifier.hidden)
    abstract = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), np.zeros((1, 8, 64), np.float32), np.zeros((1, 8), np.float32))[
            "params"
        ]
    )
    params = checkpoint.load_params(str(workdir / "classifier" / "checkpoints"), abstract)
    test = _split(workdir, "test")
    rng = np.random.default_rng(config.seed)
    noise_gain = 10 ** (-config.score.noisy_snr_db / 20)
    conditions = {
        "clean": {i: e["features"] for i, e in test.items()},
        "noisy": _features(
            {
                i: e["audio"]
                + noise_gain * np.std(e["audio"]) * rng.standard_normal(e["audio"].size).astype(np.float32)
                for i, e in test.items()
            }
        ),
    }
    accuracy, intervals = {}, {}
    for condition, features in conditions.items():
        correct, frames = [], []
        for batch, logits in padded.map_padded(
            lambda x, p: model.apply({"params": params}, x, p)[0], features, 8, padded.round_up(128)
        ):
            for row, (i, n) in enumerate(zip(batch.ids, batch.lengths)):
                correct.append(int(np.sum(np.argmax(np.asarray(logits)[row, :n], -1) == test[i]["labels"])))
                frames.append(n)
        correct, frames = np.asarray(correct), np.asarray(frames)
        accuracy[condition] = 100.0 * correct.sum() / frames.sum()
        draws = np.random.default_rng(0).integers(0, len(frames), (config.score.replications, len(frames)))
        boot = 100.0 * correct[draws].sum(1) / frames[draws].sum(1)
        intervals[condition] = [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]
    results.update_results(workdir, "classifier", {"frame_accuracy": accuracy}, {"ci": {"frame_accuracy": intervals}})
    wd.write_json(workdir / "score" / "accuracy.json", accuracy)
    return {"frame_accuracy": accuracy}


def stages(config):
    return (
        Stage("tones", make_tones, ("seed", "data"), outputs=("tones",)),
        Stage(
            "classifier",
            train_classifier,
            ("seed", "classifier"),
            deps=("tones",),
            outputs=("classifier",),
            kind="train",
            all_processes=True,  # multi-process runs: every process trains (and checkpoints) together
        ),
        Stage(
            "score",
            score,
            ("score",),
            deps=("classifier",),
            outputs=("score",),
            kind="evaluate",
            systems=("classifier",),
        ),
    )


REPORT = ReportSpec(
    metrics=(Metric("frame_accuracy", "frame accuracy (%)", lower_is_better=False),), conditions=("clean", "noisy")
)
RECIPE = Recipe("toy.tones", base_config, tiny, stages, REPORT)
