"""Checkpoints load whatever the number of processes that wrote them (synthetic CLI runs).

A fine-tuning run starts from another run's params (`--init-checkpoint`, --steps 0: it only
loads them and saves them as its step-0 checkpoint). 1 process -> 2 processes, then the
2-process checkpoint -> 1 process and -> 2 processes: every run holds, bit for bit, the
params of the first, placed replicated over all devices of all its processes. In process:
load_params places params with the target's sharding and names a missing checkpoint, a
missing leaf and a wrong shape.
"""

import jax
import numpy as np
import optax
import pytest

from tsasr.train import checkpoint
from tsasr.train import state as state_lib

from test_resume_and_multiprocess import finish, free_port, spawn

COMMON = ("--model", "tdnn", "--checkpoint-every", 2)


def _two_processes(workdir, *args):
    coordinator = f"127.0.0.1:{free_port()}"
    return [
        spawn(workdir, 1, *COMMON, *args, "--coordinator", coordinator, "--num-processes", 2, "--process-id", i)
        for i in range(2)
    ]


def _params(workdir):
    saved = np.load(workdir / "final_params.npz")
    return {name: saved[name] for name in saved.files}


def test_params_load_across_process_counts(tmp_path):
    code, output = finish(spawn(tmp_path / "one", 2, *COMMON, "--steps", 2))
    assert code == 0, output
    for process in _two_processes(
        tmp_path / "one_to_two", "--steps", 0, "--init-checkpoint", tmp_path / "one/checkpoints"
    ):
        code, output = finish(process)
        assert code == 0, output
    written_by_two = tmp_path / "one_to_two" / "checkpoints"
    assert [p.name for p in written_by_two.iterdir() if p.name.isdigit()] == ["0"]
    runs = [
        spawn(tmp_path / "two_to_one", 2, *COMMON, "--steps", 0, "--init-checkpoint", written_by_two),
        *_two_processes(tmp_path / "two_to_two", "--steps", 0, "--init-checkpoint", written_by_two),
    ]
    for process in runs:
        code, output = finish(process)
        assert code == 0, output
    expected = _params(tmp_path / "one")
    for run in ("one_to_two", "two_to_one", "two_to_two"):
        got = _params(tmp_path / run)
        assert sorted(got) == sorted(expected), run
        for name, value in expected.items():
            assert got[name].dtype == value.dtype and np.array_equal(got[name], value), (run, name)


def test_load_params_places_them_and_names_what_does_not_fit(tmp_path):
    params = {"dense": {"bias": np.arange(2, dtype=np.float32), "kernel": np.ones((3, 2), np.float32)}}
    saver = checkpoint.Checkpoints(str(tmp_path / "checkpoints"), 1)
    saver.save(1, state_lib.create(jax.device_put(params), optax.sgd(0.1)), force=True)
    saver.close()
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), params)
    loaded = checkpoint.load_params(str(tmp_path / "checkpoints"), abstract)
    for name in ("bias", "kernel"):
        assert loaded["dense"][name].sharding == device
        np.testing.assert_array_equal(loaded["dense"][name], params["dense"][name])
    wider = {"dense": {**abstract["dense"], "kernel": jax.ShapeDtypeStruct((4, 2), np.float32)}}
    with pytest.raises(ValueError, match=r"\['dense'\]\['kernel'\] has shape \(3, 2\), the model needs \(4, 2\)"):
        checkpoint.load_params(str(tmp_path / "checkpoints"), wider)
    more = {"dense": abstract["dense"], "output": abstract["dense"]}
    with pytest.raises(ValueError, match=r"params lack \['output'\]"):
        checkpoint.load_params(str(tmp_path / "checkpoints"), more)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no checkpoint"):
        checkpoint.load_params(str(tmp_path / "empty"), abstract)
