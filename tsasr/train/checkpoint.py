"""Orbax checkpoints of the TrainState: periodic saves and automatic resume."""

import contextlib
import logging
from collections.abc import Callable

import jax
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
        from scratch (init_fn).
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

    Raises ValueError when the checkpoint is missing or its params do not have the
    structure and shapes of the model being trained.
    """
    with _quiet_absl():  # orbax warns three times that a read-only manager is read-only
        manager = ocp.CheckpointManager(
            wd.absolute(checkpoint_dir), options=ocp.CheckpointManagerOptions(read_only=True)
        )
    step = manager.latest_step()
    if step is None:
        raise ValueError(f"init checkpoint {checkpoint_dir!r} holds no checkpoint.")
    restored = manager.restore(step, args=ocp.args.StandardRestore())
    params = restored["params"]
    expected = jax.tree_util.tree_flatten_with_path(abstract_params)[0]
    found = dict(jax.tree_util.tree_flatten_with_path(params)[0])
    for path, leaf in expected:
        name = jax.tree_util.keystr(path)
        if path not in found:
            raise ValueError(f"init checkpoint {checkpoint_dir!r}: params lack {name}.")
        if tuple(found[path].shape) != tuple(leaf.shape):
            raise ValueError(
                f"init checkpoint {checkpoint_dir!r}: {name} has shape "
                f"{tuple(found[path].shape)}, the model needs {tuple(leaf.shape)}."
            )
    manager.close()
    return jax.tree.map(
        lambda leaf, x: jax.device_put(_local(x).astype(leaf.dtype), leaf.sharding), abstract_params, params
    )


def _local(x):
    """A restored array as this process can place it: in a multi-host run orbax restores params
    replicated over every process's devices, and each local shard holds the whole array."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        shard = x.addressable_data(0)
        if shard.shape != x.shape:
            raise ValueError(f"checkpoint array {x.shape} is sharded over hosts ({shard.shape} here), not replicated")
        return shard
    return x
