"""Data parallelism over all devices of all processes.

Parameters and optimizer state are replicated; batches are split along `batch` over a
1-D mesh of every device. Each process feeds only its own rows and
`jax.make_array_from_process_local_data` stitches them into global arrays.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def initialize_distributed(
    coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> None:
    """Joins a multi-process run; a no-op for a single process.

    On CPU, cross-process collectives need gloo; it is selected before the backend
    starts. On TPU/GPU clusters all arguments may be None (auto-detected).
    """
    if num_processes == 1:
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )


def data_mesh() -> Mesh:
    # jax.devices() lists devices process by process, so each process's devices hold a
    # contiguous block of rows: the block its host batch fills.
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
    if global_batch_size % mesh.devices.size:
        raise ValueError(
            f"global batch size {global_batch_size} is not divisible by the {mesh.devices.size} devices of the mesh."
        )


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
    """Host-local numpy batch (this process's rows) -> dict of global jax.Arrays."""
    sharding = batch_sharding(mesh)
    out = {}
    for key, value in local_batch.items():
        value = np.asarray(value)
        global_shape = (value.shape[0] * jax.process_count(),) + value.shape[1:]
        check_batch_size(global_shape[0], mesh)
        out[key] = jax.make_array_from_process_local_data(sharding, value, global_shape)
    return out


def replicate(tree, mesh: Mesh):
    """A pytree of host values (identical on every process) -> arrays replicated on the mesh."""
    sharding = replicated(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_callback(np.shape(x), sharding, lambda index, x=np.asarray(x): x[index]),
        jax.device_get(tree),
    )
