"""Device mesh and shardings for data-parallel training (the modern form of `pmap`).

One mesh axis, 'data', over every device of every host. Batches are split
along their leading axis across it; parameters and optimizer state are
replicated. XLA (GSPMD) inserts the gradient all-reduce, and batch statistics
(BatchNorm, AdaFace) are computed over the global batch, so N devices give the
same step as one device.
"""

import dataclasses
import os
from typing import Callable, TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

T = TypeVar('T')

DATA_AXIS = 'data'


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
  """Multi-host settings for `jax.distributed.initialize`; all None on a single host
  (on Cloud TPU / SLURM jax auto-detects them when `enabled` is True)."""
  enabled: bool = False
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None

  @classmethod
  def from_environment(cls, enabled: bool) -> 'DistributedConfig':
    """The settings from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID where they are set (a
    cluster jax cannot detect by itself); None, for jax to detect, where they are not."""
    number = lambda name: int(os.environ[name]) if name in os.environ else None
    return cls(enabled, os.environ.get('JAX_COORDINATOR_ADDRESS'), number('JAX_NUM_PROCESSES'),
               number('JAX_PROCESS_ID'))


def initialize_distributed(config: DistributedConfig) -> None:
  """Joins the multi-host job when enabled (call before any other JAX call)."""
  if config.enabled:
    jax.distributed.initialize(coordinator_address=config.coordinator_address, num_processes=config.num_processes,
                               process_id=config.process_id)


def first_host_first(prepare: Callable[[], T], what: str) -> T:
  """Runs `prepare` on host 0, then (once every host has reached this point) on the others.

  For work that fills storage the hosts share, such as building a dataset cache: host 0 does it once and the
  other hosts find it done, where all of them at once would race on the same files. On storage
  that is not shared, every host still prepares its own copy. Every host must call it at the same point (it
  holds a barrier), and `prepare` must not itself wait on the other hosts. what: names the barrier.
  """
  if jax.process_count() == 1:
    return prepare()
  if jax.process_index() == 0:
    result = prepare()
  multihost_utils.sync_global_devices(f'fvjax: {what} prepared on host 0')
  if jax.process_index() != 0:
    result = prepare()
  return result


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


def host_block(global_rows: int, what: str, hosts: int | None = None, host: int | None = None) -> slice:
  """This host's contiguous block of the rows of a global batch.

  Host h gets block h, so the hosts' blocks in process order assemble the
  single-host batch (`host_to_global`). hosts / host default to this job's.
  what: the config field that sets `global_rows`, named in the error when the
  rows do not split evenly over the hosts.
  """
  hosts = jax.process_count() if hosts is None else hosts
  host = jax.process_index() if host is None else host
  if global_rows % hosts:
    raise ValueError(f'{what} {global_rows} does not split over {hosts} hosts')
  return slice(host * global_rows // hosts, (host + 1) * global_rows // hosts)
