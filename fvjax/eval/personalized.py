"""Batched personalised verification: scores[u, p] = f(theta[u], probe[p]) for thousands of users at once.

`verifier.apply_many` (f over many users: `jax.vmap` over theta on
accelerators, `lax.map` on CPU) scores (user chunk x probe chunk) tiles sized
so that one tile's activations stay under a memory budget, with the user axis
of each tile split over all devices.
"""

import math

import jax
import numpy as np

from fvjax import parallel
from fvjax.models import verifier


def pair_activation_bytes(spec: verifier.VerifierSpec) -> int:
  """Bytes of the largest activation of one (user, probe) pair in f (float32)."""
  size, largest = spec.input_size, 0
  for channels, stride in zip(spec.channels, spec.strides):
    size = (size + 2 * (spec.kernel // 2) - spec.kernel) // stride + 1
    largest = max(largest, size * size * channels)
  return 4 * largest


def tile_shape(num_users: int, num_probes: int, spec: verifier.VerifierSpec, memory_budget_bytes: int,
               devices: int = 1) -> tuple[int, int]:
  """(users, probes) per tile: all probes if they fit, users a multiple of `devices`."""
  pairs = max(1, memory_budget_bytes // (3 * pair_activation_bytes(spec)))  # ~3 live activations per layer
  probes = min(num_probes, max(1, pairs // devices))
  users = max(devices, (pairs // probes) // devices * devices)
  return min(users, math.ceil(num_users / devices) * devices), probes


def score_matrix(thetas: np.ndarray, probes: np.ndarray, spec: verifier.VerifierSpec = verifier.VerifierSpec(),
                 memory_budget_bytes: int = 2 << 30, mesh=None, impl: str = 'auto') -> np.ndarray:
  """Logits [U, P] of every user's verifier on every probe.

  thetas: [U, num_params] generated weights. probes: [P, s, s, C] verifier inputs
  (`fvjax.edge.verifier_input` of the aligned faces).
  """
  thetas, probes = np.asarray(thetas, np.float32), np.asarray(probes, np.float32)
  if thetas.ndim != 2 or thetas.shape[1] != spec.num_params:
    raise ValueError(f'thetas must be [U, {spec.num_params}], got {thetas.shape}')
  mesh = mesh or parallel.data_mesh()
  users_per_tile, probes_per_tile = tile_shape(len(thetas), len(probes), spec, memory_budget_bytes, mesh.size)
  score_tile = _tile_fn(spec, mesh, impl)
  scores = np.empty((len(thetas), len(probes)), np.float32)
  for u0 in range(0, len(thetas), users_per_tile):
    users = _pad_to(thetas[u0:u0 + users_per_tile], users_per_tile)
    users = jax.device_put(users, parallel.batch_sharding(mesh))
    for p0 in range(0, len(probes), probes_per_tile):
      tile = score_tile(users, _pad_to(probes[p0:p0 + probes_per_tile], probes_per_tile))
      n_u, n_p = min(users_per_tile, len(thetas) - u0), min(probes_per_tile, len(probes) - p0)
      scores[u0:u0 + n_u, p0:p0 + n_p] = np.asarray(tile)[:n_u, :n_p]
  return scores


def _tile_fn(spec, mesh, impl):
  rep, split = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  return jax.jit(lambda thetas, x: verifier.apply_many(thetas, x, spec, impl), in_shardings=(split, rep),
                 out_shardings=split)


def _pad_to(x: np.ndarray, n: int) -> np.ndarray:
  """Zero-pads the leading axis to n rows (fixed tile shapes compile once)."""
  return np.concatenate([x, np.zeros((n - len(x), *x.shape[1:]), x.dtype)]) if len(x) < n else x
