"""Streamed training (#16) over 2 JAX processes x 2 CPU devices equals 1 process x 4 devices.

A tiny TDNN is trained with frame CE by tsasr.train.loop.train on batches of int16 audio streamed
from ArrayRecord shards by tsasr.data.loader.Loader (with `groups` fixed), LFBE computed in the
step (tsasr.audio.device_features.on_audio), once as 1 process with 4 CPU devices and once as 2
processes with 2 each (jax.distributed on 127.0.0.1, gloo collectives). Each run is this file
run as a script (`main`). The two runs log the same per-step metrics and end with the same
parameters (bit for bit where the cross-device sums add in the same order; see the test), and
each process of the 2-process run read records of its own shards only: every ArrayRecord file it
opened and every record it read, recorded below the loader (a wrapper around array_record's
reader), is in its half of the shards, the ids its loader yielded are among those records, and
process 0's rows then process 1's are, step by step, the rows the one process read from all four
shards.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np

from tsasr.data import loader as loader_lib
from tsasr.data import records
from tsasr.train import metrics

from test_resume_and_multiprocess import free_port

SHARDS, GROUPS, BATCH = 4, 2, 8  # process p of 2 reads shards 2p, 2p + 1: its row group of 4 rows
BUCKET = 48  # LFBE frames: every utterance (0.15-0.45 s) fits, so the step compiles once
STEPS = 8  # two epochs (of 4 batches: shards 0 and 1 hold 17 records), so a reshuffle is crossed
SENONES = 8


def loader_config():
    # Fixed row groups: the same global batches for 1 and 2 processes (tsasr.data.loader).
    return loader_lib.LoaderConfig(batch_size=BATCH, bucket_boundaries=(BUCKET,), groups=GROUPS)


def write_corpus(directory: pathlib.Path) -> None:
    """48 utterances of noisy tones with random senones per frame, in SHARDS shards."""
    rng = np.random.default_rng(0)
    examples = []
    for i in range(48):
        samples = int(rng.integers(2400, 7200))
        t = np.arange(samples) / 16000
        audio = 0.3 * np.sin(2 * np.pi * (200 + 50 * (i % 7)) * t) + 0.02 * rng.standard_normal(samples)
        frames = 1 + (samples - 400) // 160
        examples.append({"id": f"utt{i:02d}", "audio": audio, "senones": rng.integers(0, SENONES, frames, np.int32)})
    records.write_split(directory, examples, num_shards=SHARDS)


def main(directory: str, workdir: str, coordinator: str, num_processes: int, process_id: int) -> None:
    """One process of a run: trains, then writes what it read to WORKDIR/read_<process>.json and
    (process 0) the final parameters to WORKDIR/final_params.npz."""
    from array_record.python import array_record_module

    opened, reads = [], []  # paths of the readers, (path, positions) of every read

    class RecordingReader:
        """array_record's reader, recording what is opened and read (Grain opens one per shard)."""

        def __init__(self, path, *args, **kwargs):
            self.path, self.reader = os.path.basename(path), Reader(path, *args, **kwargs)
            opened.append(self.path)

        def read(self, positions, *args):
            reads.append((self.path, [int(p) for p in positions]))
            return self.reader.read(positions, *args)

        def __getattr__(self, name):
            return getattr(self.reader, name)

    Reader, array_record_module.ArrayRecordReader = array_record_module.ArrayRecordReader, RecordingReader

    import jax

    from tsasr.audio import device_features
    from tsasr.models import build_model
    from tsasr.train import loop
    from tsasr.train import sharding
    from tsasr.train import step as step_lib

    sharding.initialize_distributed(coordinator, num_processes, process_id)
    config = loop.default_config()
    config.num_steps, config.log_every, config.checkpoint_every, config.progress_bar = STEPS, 1, 0, False
    config.optimizer.learning_rate, config.optimizer.warmup_steps = 1e-2, 2
    loader = loader_lib.Loader(directory, loader_config(), jax.process_index(), jax.process_count())
    model = build_model(dict(name="tdnn", num_senones=SENONES, hidden=16, num_layers=1, input_context=(1, 1)))
    norm = {"mean": [-5.0] * 64, "std": [2.0] * 64, "utterance_mean": True}
    loss_fn = device_features.on_audio(step_lib.make_frame_ce_loss(model, "senones"), norm)
    yielded = []

    def batches(start_step):
        for batch in loader(start_step):
            yielded.append([str(u) for u in batch["ids"]])
            yield batch

    state = loop.train(config, model, loss_fn, batches, workdir)
    # The prefetch thread may have read a batch or two beyond the last step.
    seen = {"devices": jax.local_device_count(), "opened": opened, "reads": reads, "ids": yielded[:STEPS]}
    seen["probe"] = _summation_order_probe()
    pathlib.Path(workdir, f"read_{jax.process_index()}.json").write_text(json.dumps(seen))
    params = jax.device_get(state.params)
    if jax.process_index() == 0:
        flat = jax.tree_util.tree_flatten_with_path(params)[0]
        np.savez(os.path.join(workdir, "final_params.npz"), **{jax.tree_util.keystr(p): v for p, v in flat})


def _summation_order_probe() -> list[float]:
    """Sums over the 4 devices of values whose float32 sum depends on the order it is taken in
    (1 + 1e8 == 1e8): the same list means the same order (for these 4 values)."""
    import jax
    import jax.numpy as jnp

    from tsasr.train import sharding

    mesh = sharding.data_mesh()
    values = np.array([[1.0, 1e8, -1e8, 1.0], [1e8, 1.0, 1.0, -1e8], [1.0, 1.0, 1e8, -1e8]], np.float32).T
    rows = slice(jax.process_index() * jax.local_device_count(), (jax.process_index() + 1) * jax.local_device_count())
    x = jax.make_array_from_process_local_data(sharding.batch_sharding(mesh), values[rows], values.shape)
    total = jax.jit(lambda x: jnp.sum(x, axis=0), out_shardings=sharding.replicated(mesh))(x)
    return np.asarray(jax.device_get(total)).tolist()


def _spawn(directory, workdir, devices, coordinator="", num_processes=1, process_id=0):
    """This file as a script, its output in WORKDIR.log.<process_id>."""
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        PYTHONPATH=os.pathsep.join(filter(None, [str(pathlib.Path(__file__).parent), os.environ.get("PYTHONPATH")])),
    )
    args = [str(directory), str(workdir), coordinator, str(num_processes), str(process_id)]
    with open(f"{workdir}.log.{process_id}", "w") as log:
        process = subprocess.Popen([sys.executable, __file__, *args], env=env, stdout=log, stderr=subprocess.STDOUT)
    process.log = log.name
    return process


def _wait(runs, timeout=240):
    """Waits for every run; stops the others once one fails (a lone process of the pair would
    wait for its peer until JAX's own timeout)."""
    deadline = time.monotonic() + timeout
    try:
        while None in (codes := [run.poll() for run in runs]) and not any(codes):
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.05)
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
                run.wait()
    for run in sorted(runs, key=lambda run: run.returncode == -signal.SIGKILL):  # the failure before those stopped
        assert run.returncode == 0, pathlib.Path(run.log).read_text()[-5000:]


def _shard_ids(directory: pathlib.Path) -> dict[str, list[str]]:
    """Each shard file's record ids, in record order (read here, not through the loader)."""
    index = records.read_index(directory)
    return {
        os.path.basename(p): [r["id"] for r in records.read_shard(p)] for p in records.shard_paths(directory, index)
    }


def test_two_processes_read_their_shards_and_train_as_one(tmp_path):
    directory = tmp_path / "records"
    write_corpus(directory)
    coordinator = f"127.0.0.1:{free_port()}"
    runs = [
        _spawn(directory, tmp_path / "one", 4),
        *(_spawn(directory, tmp_path / "two", 2, coordinator, 2, i) for i in range(2)),
    ]
    _wait(runs)

    shard_ids = _shard_ids(directory)
    files = sorted(shard_ids)
    one = json.loads((tmp_path / "one" / "read_0.json").read_text())
    two = [json.loads((tmp_path / "two" / f"read_{p}.json").read_text()) for p in range(2)]
    assert one["devices"] == 4 and two[0]["devices"] == two[1]["devices"] == 2
    assert set(one["opened"]) == {path for path, _ in one["reads"]} == set(files)  # one process: every shard
    for p, seen in enumerate(two):
        own = files[2 * p : 2 * p + 2]
        # It opened and read its own two shard files only ...
        assert set(seen["opened"]) == {path for path, _ in seen["reads"]} == set(own), (p, seen["opened"])
        # ... and its batches are records it read there, BATCH / 2 rows a step.
        read = {shard_ids[path][i] for path, positions in seen["reads"] for i in positions}
        yielded = [utt for ids in seen["ids"] for utt in ids]
        assert set(yielded) <= read <= set(shard_ids[own[0]] + shard_ids[own[1]]), p
        assert [len(ids) for ids in seen["ids"]] == [BATCH // 2] * STEPS, p
    # Step by step, process 0's rows then process 1's are the one process's global batch.
    for step in range(STEPS):
        assert two[0]["ids"][step] + two[1]["ids"][step] == one["ids"][step], step
    epoch = loader_lib.Loader(directory, loader_config()).batches_per_epoch
    assert epoch < STEPS and len({u for ids in one["ids"][:epoch] for u in ids}) == epoch * BATCH

    # The same data on the same devices' rows (device d holds rows 2d, 2d + 1 either way) and the
    # same per-device programs; the cross-device sums (of the loss, of the gradients) are the
    # one difference: in-process collectives for 1 x 4, gloo's for 2 x 2, which add the 4
    # devices' terms in another order (the probe) and so may round the last bit differently
    # (seen: the loss of steps 4-6 by 1 ulp, and ~600 of the 3,300 weights by 1-2 ulp).
    same_order = one["probe"] == two[0]["probe"] == two[1]["probe"]
    rtol, atol = (0, 0) if same_order else (1e-6, 1e-7)
    lines = {run: metrics.read(str(tmp_path / run)) for run in ("one", "two")}
    assert [r["step"] for r in lines["one"]] == [r["step"] for r in lines["two"]] == list(range(1, STEPS + 1))
    for a, b in zip(lines["one"], lines["two"]):
        assert sorted(a) == sorted(b)
        for key in sorted(set(a) - {"step", "frames_per_s"}):
            np.testing.assert_allclose(b[key], a[key], rtol=rtol, atol=0, err_msg=f"step {a['step']} {key}")
    expected = np.load(tmp_path / "one" / "final_params.npz")
    got = np.load(tmp_path / "two" / "final_params.npz")
    assert sorted(got.files) == sorted(expected.files)
    for name in expected.files:
        np.testing.assert_allclose(got[name], expected[name], rtol=rtol, atol=atol, err_msg=name)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
