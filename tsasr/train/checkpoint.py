"""Orbax checkpoints of the TrainState: periodic saves and automatic resume."""

import contextlib
import logging
from collections.abc import Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

from tsasr import workdir as wd
from tsasr.train.state import TrainState


def _with_sharding(abstract_tree, sharding):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), abstract_tree)


class Checkpoints:
    """Saves every `save_every` steps into `directory`, keeping the last `max_to_keep`.

    Saves are asynchronous: device arrays are copied to host before `save` returns (so the
    next step may donate them), files are written in the background into a temporary
    directory and renamed when complete; a run killed mid-save leaves no half checkpoint
    that a restart could pick up.
    """

    def __init__(self, directory: str, save_every: int, max_to_keep: int = 3):
        self.save_every = save_every
        self.manager = ocp.CheckpointManager(
            wd.absolute(directory),  # a URI (gs://) stays one: orbax writes it through epath and tensorstore
            options=ocp.CheckpointManagerOptions(
                save_interval_steps=max(save_every, 1),
                max_to_keep=max_to_keep,
                create=True,
                cleanup_tmp_directories=True,
            ),
        )

    def restore_or_init(
        self, abstract_state: TrainState, sharding, init_fn: Callable[[], TrainState], init_checkpoint: str = ""
    ) -> TrainState:
        """The state to start from.

        Resume order: an existing checkpoint in this workdir (the run was interrupted),
        then the explicit init checkpoint (its params only; fresh step and optimizer), then
        from scratch (init_fn). The target's shardings (not the saved ones) place what is
        restored, so a run may resume, or start from, a checkpoint that another number of
        processes wrote.
        """
        target = _with_sharding(abstract_state, sharding)
        latest = self.manager.latest_step()
        if latest is not None:
            return self.manager.restore(latest, args=ocp.args.StandardRestore(target))
        state = init_fn()
        if init_checkpoint:
            return state.replace(params=load_params(init_checkpoint, target.params))
        return state

    def save(self, step: int, state: TrainState, force: bool = False) -> bool:
        due = self.save_every > 0 and step % self.save_every == 0
        if not (due or force) or step in self.manager.all_steps():
            return False
        # force: the decision is made here and by the loop (tsasr.train.preemption); orbax's own
        # should_save would ask JAX's preemption sync point a second time in the same step.
        return self.manager.save(step, args=ocp.args.StandardSave(state), force=True)

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


@contextlib.contextmanager
def _quiet_absl():
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        yield
    finally:
        absl.setLevel(level)


def load_params(checkpoint_dir: str, abstract_params):
    """Params of the latest checkpoint under checkpoint_dir, placed like abstract_params.

    Any number of processes may load a checkpoint written by any other number: each process
    reads the whole params onto one of its own devices (a read that synchronises with no other
    process, so process 0 alone may load one while the others wait), against a target built
    from the checkpoint's own metadata (without one orbax expects the writer's devices); then
    each leaf becomes an array with its abstract leaf's sharding (this process's first device
    when it has none), which may span every process (identical values on each).

    Raises ValueError when the checkpoint is missing or its params do not have the
    structure and shapes of the model being trained.
    """
    # This process alone: no barrier with the others, who may not be loading anything now.
    alone = ocp.options.MultiprocessingOptions(primary_host=jax.process_index(), active_processes={jax.process_index()})
    with _quiet_absl():  # orbax warns three times that a read-only manager is read-only
        manager = ocp.CheckpointManager(
            wd.absolute(checkpoint_dir),
            item_handlers=ocp.PyTreeCheckpointHandler(multiprocessing_options=alone),
            options=ocp.CheckpointManagerOptions(read_only=True, multiprocessing_options=alone),
        )
    try:
        step = manager.latest_step()
        if step is None:
            raise ValueError(f"init checkpoint {checkpoint_dir!r} holds no checkpoint.")
        metadata = manager.item_metadata(step)
        saved = getattr(metadata, "tree", metadata)["params"]
        expected = jax.tree_util.tree_flatten_with_path(abstract_params)[0]
        found = dict(jax.tree_util.tree_flatten_with_path(saved)[0])
        for path, leaf in expected:
            name = jax.tree_util.keystr(path)
            if path not in found:
                raise ValueError(f"init checkpoint {checkpoint_dir!r}: params lack {name}.")
            if tuple(found[path].shape) != tuple(leaf.shape):
                raise ValueError(
                    f"init checkpoint {checkpoint_dir!r}: {name} has shape "
                    f"{tuple(found[path].shape)}, the model needs {tuple(leaf.shape)}."
                )
        here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        item = {"params": jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=here), saved)}
        restore_args = {"params": jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=here), saved)}
        restored = manager.restore(
            step, args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True)
        )
    finally:
        manager.close()
    params = restored["params"]
    return jax.tree.map(lambda leaf, x: _place(x.astype(leaf.dtype), leaf.sharding), abstract_params, params)


def _place(local: jax.Array, sharding):
    """A whole array on one of this process's devices -> an array with `sharding`: moved on
    device when every device of the sharding is this process's, else built from host values
    (jax cannot transfer to other hosts' devices; each process supplies its own shards)."""
    if sharding is None:
        return local
    if sharding.is_fully_addressable:
        return jax.device_put(local, sharding)
    host = np.asarray(local)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
