"""Device mesh and shardings for data-parallel training (the modern form of `pmap`).

One mesh axis, 'data', over every device of every host. Batches are split
along their leading axis across it; parameters and optimizer state are
replicated. XLA (GSPMD) inserts the gradient all-reduce, and batch statistics
(BatchNorm, AdaFace) are computed over the global batch, so N devices give the
same step as one device.
"""

import dataclasses

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
  """Multi-host settings for `jax.distributed.initialize`; all None on a single host
  (on Cloud TPU / SLURM jax auto-detects them when `enabled` is True)."""
  enabled: bool = False
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None


def initialize_distributed(config: DistributedConfig) -> None:
  """Joins the multi-host job when enabled (call before any other JAX call)."""
  if config.enabled:
    jax.distributed.initialize(coordinator_address=config.coordinator_address, num_processes=config.num_processes,
                               process_id=config.process_id)


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh named 'data' over `devices` (default: all devices of all hosts)."""
  devices = jax.devices() if devices is None else devices
  return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over 'data'."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """Same full copy on every device."""
  return NamedSharding(mesh, P())


def host_to_global(batch: dict, sharding: NamedSharding) -> dict:
  """Assembles each host's rows of a batch into one global, sharded array per leaf."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)
