"""The k x T sweep as a member axis of the one training loop: each member equals the
single-student step, one compile, the asr recipe's sweep stages."""

from __future__ import annotations

import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tsasr import config as config_lib
from tsasr import pipeline
from tsasr import recipe as recipe_lib
from tsasr.models import build_model
from tsasr.recipes.asr import grid as grid_lib
from tsasr.recipes.asr import objectives
from tsasr.train import loop
from tsasr.train import optim
from tsasr.train import state as state_lib
from tsasr.train import step as step_lib
from tsasr.train.config import optimizer_config

from conftest import ASR

ROOT = pathlib.Path(__file__).resolve().parents[1]
GRID = [{"top_k": 1, "temperature": 1.0}, {"top_k": 3, "temperature": 2.0}, {"top_k": 8, "temperature": 0.5}]
SENONES, STORED_K, DIM = 24, 8, 16


def _setup():
    model = build_model(
        {
            "name": "tdnn",
            "hidden": 32,
            "num_layers": 2,
            "input_context": (1, 1),
            "dilations": (0, 1),
            "subsampling": 1,
            "num_senones": SENONES,
        }
    )
    members = grid_lib.parse_grid(GRID, stored_k=STORED_K)
    tx, schedule = optim.make_optimizer(optimizer_config(), 10)
    rng = np.random.default_rng(0)
    batch_size, frames = 3, 20
    paddings = np.zeros((batch_size, frames), np.float32)
    paddings[1, 14:] = 1.0
    paddings[2, 7:] = 1.0
    logits = np.sort(rng.normal(size=(batch_size, frames, STORED_K)).astype(np.float32) * 3, axis=-1)[..., ::-1]
    ids = np.stack([rng.permutation(SENONES)[:STORED_K] for _ in range(batch_size * frames)])
    batch = {
        "features": rng.normal(size=(batch_size, frames, DIM)).astype(np.float32),
        "feature_paddings": paddings,
        "soft_ids": ids.reshape(batch_size, frames, STORED_K).astype(np.int32),
        "soft_logits": np.ascontiguousarray(logits),
    }
    init_rng, step_rng = jax.random.split(jax.random.PRNGKey(3))

    def init_one(key):
        variables = model.init({"params": key, "dropout": key}, jnp.zeros((1, 12, DIM)), jnp.zeros((1, 12)))
        return state_lib.create(variables["params"], tx)

    state = jax.jit(lambda: jax.vmap(init_one)(loop.member_keys(init_rng, len(members))))()
    return model, members, tx, schedule, batch, state, step_rng


@pytest.fixture(scope="module")
def stepped():
    """Three member-axis steps (tsasr.train.loop.vmap_members, jitted with donated state), counting traces."""
    model, members, tx, schedule, batch, state, step_rng = _setup()
    traces = []
    loss_fn = objectives.make_loss_fn(model, 1)  # each member's k and T arrive in its batch

    def counting_loss(*args, **kwargs):
        traces.append(1)
        return loss_fn(*args, **kwargs)

    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("data",))
    step = jax.jit(loop.vmap_members(step_lib.make_train_step(counting_loss, tx, schedule)), donate_argnums=(0,))
    state = jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    grid = grid_lib.grid_arrays(members)
    before = jax.device_get(state)  # the step donates its state
    outputs = []
    for i in range(3):
        # A different grid of the same size is new data, not a new program.
        rolled = {"top_k": np.roll(grid["top_k"], i), "temperature": np.roll(grid["temperature"], i)}
        state, measurements = step(state, batch, rolled, step_rng)
        outputs.append(jax.device_get((state, measurements)))
    return dict(
        model=model,
        members=members,
        tx=tx,
        schedule=schedule,
        batch=batch,
        step_rng=step_rng,
        before=before,
        after=outputs[0][0],
        measurements=outputs[0][1],
        final=outputs[-1][0],
        traces=traces,
    )


def test_members_equal_single_student_loss_and_update(stepped):
    s = stepped
    # Members start from different parameters (their own fold_in of the seed).
    assert not all(np.allclose(x[0], x[1]) for x in jax.tree.leaves(s["before"].params))
    for m, member in enumerate(s["members"]):
        # The ordinary single-student step, its loss tsasr.losses.soft_targets at (k, T) over the sliced ids,
        # applied to member m alone with member m's key.
        loss_fn = objectives.make_loss_fn(s["model"], 1, jnp.float32, member.top_k, member.temperature)
        single_step = jax.jit(step_lib.make_train_step(loss_fn, s["tx"], s["schedule"]))
        member_state = jax.tree.map(lambda x: x[m], s["before"])
        expected_state, expected = jax.device_get(
            single_step(member_state, s["batch"], jax.random.fold_in(s["step_rng"], m))
        )
        for key in ("loss", "frame_accuracy", "weight", "grad_norm", "learning_rate"):
            np.testing.assert_allclose(
                s["measurements"][key][m], expected[key], rtol=1e-5, err_msg=f"{member.system} {key}"
            )
        for name in ("params", "opt_state"):
            jax.tree.map(
                lambda a, b: np.testing.assert_allclose(a[m], b, rtol=1e-5, atol=1e-6, err_msg=member.system),
                getattr(s["after"], name),
                getattr(expected_state, name),
            )
    assert len(set(np.round(s["measurements"]["loss"], 5))) == len(s["members"])


def test_masked_targets_match_soft_targets():
    from tsasr import losses

    logits = jnp.asarray(np.sort(np.random.default_rng(1).normal(size=(2, 5, 8)), axis=-1)[..., ::-1], jnp.float32)
    for k, t in ((1, 1.0), (3, 2.0), (8, 0.7)):
        masked = np.asarray(objectives.masked_soft_targets(logits, jnp.int32(k), jnp.float32(t)))
        np.testing.assert_allclose(masked[..., :k], losses.soft_targets(logits, k, t), rtol=1e-6)
        assert np.all(masked[..., k:] == 0.0)


def test_step_compiles_once_for_a_fixed_batch_shape(stepped):
    assert len(stepped["traces"]) == 1
    assert np.all(np.asarray(stepped["final"].step) == 3)


@pytest.mark.parametrize(
    "points, message",
    [
        ([{"top_k": 0, "temperature": 1.0}], "top_k=0"),
        ([{"top_k": 2.5, "temperature": 1.0}], "top_k=2.5"),
        ([{"top_k": 9, "temperature": 1.0}], "exceeds the k=8"),
        ([{"top_k": 2, "temperature": 0.0}], "temperature=0.0"),
        ([{"top_k": 2, "temperature": float("nan")}], "temperature=nan"),
        ([{"top_k": 2, "temperature": 1.0}, {"top_k": 2, "temperature": 1}], "appears twice"),
        ([{"top_k": 2}], "exactly the fields"),
        ([], "non-empty"),
    ],
)
def test_invalid_grid_rejected(points, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        grid_lib.parse_grid(points, stored_k=STORED_K)


def test_experiment_grid_and_label_k():
    experiment = config_lib.load_experiment(ROOT / "experiments" / "sweep_k_T.py")
    members = grid_lib.parse_grid(experiment.sweep())
    assert len(members) == 13 and sum(m.top_k == 1 for m in members) == 1
    assert {m.top_k for m in members} == {1, 5, 10, 20, 40} and {m.temperature for m in members} == {1.0, 2.0, 3.0}
    config = config_lib.experiment_config(ROOT / "experiments" / "sweep_k_T.py")
    with config.unlocked():
        config.student.label_top_k = 20
    with pytest.raises(ValueError, match="exceeds the k=20"):
        grid_lib.with_grid(config, experiment.sweep())
    for field, value in (("online", True), ("hard_weight", 0.5)):
        config = config_lib.experiment_config(ROOT / "experiments" / "sweep_k_T.py")
        with config.unlocked():
            config.student[field] = value
        with pytest.raises(ValueError, match="from the stored soft labels alone"):
            grid_lib.with_grid(config, experiment.sweep())


# Small enough for the runner test: a 4-step teacher and student, one LF-MMI step, one test condition.
FAST = [
    "--config.teacher.train.num_steps=4",
    "--config.sequence.train.num_steps=1",
    "--config.sequence.train.checkpoint_every=1",
    "--config.student.train.num_steps=4",
    "--config.student.train.log_every=2",
    "--config.student.train.checkpoint_every=2",
    "--config.hmm.gmm_baseline=false",
    "--config.decode.conditions=('noisy',)",
    "--config.decode.bootstrap_replications=20",
]


def test_runner_sweep_on_tiny_workdir(tiny_run, tmp_path):
    """The recipe's sweep after `label`: rows, table and plot; a rerun skips it; a new grid redoes it."""
    workdir = tmp_path / "run"
    # A copy: this test's short teacher must not replace the shared tiny workdir's.
    shutil.copytree(tiny_run[0], workdir)
    config = config_lib.experiment_config(ROOT / "experiments" / "sweep_k_T.py", tiny_run=True, overrides=FAST)
    with config.unlocked():
        config.workers = 2
    grid = [{"top_k": 1, "temperature": 1.0}, {"top_k": 20, "temperature": 2.0}]
    config = grid_lib.with_grid(config, grid)
    report = recipe_lib.run(ASR, config, workdir)
    assert list(report)[-3:] == ["label", "sweep", "decode_sweep"] and report["sweep"]["status"] == "ran"
    assert report["noisify"]["status"] == "skipped"  # the shared data is reused, not remade
    results = json.loads((workdir / "results.json").read_text())
    for system in ("student_ce_k1_T1", "student_ce_k20_T2"):
        assert 0.0 <= results["systems"][system]["wer"]["noisy"] <= 200.0
        assert system in results["relative_to_teacher"]
        lines = (workdir / "sweep" / "members" / system / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["step"] for line in lines] == [2, 4]
    assert (workdir / "plots" / "sweep_k_T.png").read_bytes()[:4] == b"\x89PNG"
    assert "T = 2" in (workdir / "sweep_k_T.md").read_text()
    recipe_lib.write_report(ASR, config, workdir)  # the end-of-run report shows the sweep beside the recipe's systems
    report_text = (workdir / "results.md").read_text()
    assert "## k x T sweep" in report_text and "| 1 (hard labels) |" in report_text
    assert "](plots/sweep_k_T.png)" in report_text
    again = recipe_lib.run(ASR, config, workdir)
    assert all(info["status"] == "skipped" for info in again.values())
    changed = grid_lib.with_grid(config, grid[:1])
    keys = pipeline.stage_keys(changed, ASR.stages(changed))
    assert keys["sweep"] != pipeline.stage_keys(config, ASR.stages(config))["sweep"]
    assert keys["label"] == pipeline.stage_keys(config, ASR.stages(config))["label"]
