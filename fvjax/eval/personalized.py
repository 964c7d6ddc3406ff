"""Batched personalised verification: scores[u, p] = f(theta[u], probe[p]) for thousands of users at once.

`verifier.apply_many` maps f over the users (`users_per_step` of them vmapped
together per sequential step). `score_matrix` cuts the U x P matrix into
(user chunk x probe chunk) tiles sized by a memory budget per device, with the
user axis of each tile split over all devices (of all hosts).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from fvjax import calibration, imageio, parallel
from fvjax.models import verifier


def pair_activation_bytes(spec: verifier.VerifierSpec) -> int:
  """Bytes of the largest activation of one (user, probe) pair in f (float32)."""
  size, largest = spec.input_size, 0
  for channels, stride in zip(spec.channels, spec.strides):
    size = (size + 2 * (spec.kernel // 2) - spec.kernel) // stride + 1
    largest = max(largest, size * size * channels)
  return 4 * largest


LIVE_ACTIVATIONS = 4
"""Activations of a (user, probe) pair that XLA keeps alive at once in `verifier.apply_many` (measured: ~3.1)."""


def probe_bytes(spec: verifier.VerifierSpec, users_per_step: int = 1) -> int:
  """Bytes one probe costs in one scoring step: its input and the live activations of the step's users."""
  return 4 * spec.input_size**2 * spec.in_channels + LIVE_ACTIVATIONS * users_per_step * pair_activation_bytes(spec)


def tile_shape(num_users: int, num_probes: int, spec: verifier.VerifierSpec, memory_budget_bytes: int,
               devices: int = 1, users_per_step: int = 1) -> tuple[int, int]:
  """(users, probes) per tile, so that one device's share of a tile fits `memory_budget_bytes`.

  Half of the budget holds one step's work (`probe_bytes` per probe). The other
  half holds the device's tile rows: per user its theta [D] and its scores [p].
  Users are a multiple of `devices`, and each device's a multiple of
  `users_per_step` (a remainder group would copy the thetas).
  """
  half = memory_budget_bytes // 2
  probes = min(num_probes, max(1, half // probe_bytes(spec, users_per_step)))
  users_per_device = max(1, half // (4 * (spec.num_params + probes)) // users_per_step) * users_per_step
  return min(users_per_device, math.ceil(num_users / devices)) * devices, probes


def score_matrix(thetas: np.ndarray, probes: np.ndarray, spec: verifier.VerifierSpec = verifier.VerifierSpec(),
                 memory_budget_bytes: int = 2 << 30, mesh=None, users_per_step: int = 1) -> np.ndarray:
  """Logits [U, P] of every user's verifier on every probe.

  thetas: [U, num_params] generated weights. probes: [P, s, s, C] verifier inputs
  (`fvjax.edge.verifier_input` of the aligned faces). memory_budget_bytes: per device.
  """
  thetas, probes = np.asarray(thetas, np.float32), np.asarray(probes, np.float32)
  if thetas.ndim != 2 or thetas.shape[1] != spec.num_params:
    raise ValueError(f'thetas must be [U, {spec.num_params}], got {thetas.shape}')
  mesh = mesh or parallel.data_mesh()
  users_per_tile, probes_per_tile = tile_shape(len(thetas), len(probes), spec, memory_budget_bytes, mesh.size,
                                               users_per_step)
  score_tile = _tile_fn(spec, mesh, users_per_step)
  scores = np.empty((len(thetas), len(probes)), np.float32)
  for u0 in range(0, len(thetas), users_per_tile):
    users = _pad_to(thetas[u0:u0 + users_per_tile], users_per_tile)
    users = jax.device_put(users, parallel.batch_sharding(mesh))
    for p0 in range(0, len(probes), probes_per_tile):
      tile = score_tile(users, _pad_to(probes[p0:p0 + probes_per_tile], probes_per_tile))
      n_u, n_p = min(users_per_tile, len(thetas) - u0), min(probes_per_tile, len(probes) - p0)
      scores[u0:u0 + n_u, p0:p0 + n_p] = np.asarray(tile)[:n_u, :n_p]
  return scores


@functools.lru_cache(maxsize=16)
def _tile_fn(spec, mesh, users_per_step):
  """The jitted tile scorer, cached so that repeated `score_matrix` calls compile once.

  Each device scores its users; the tile's scores come back replicated (a small all-gather), so that every
  host of a multi-host mesh can read the whole tile.
  """
  rep, split = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  return jax.jit(lambda thetas, x: verifier.apply_many(thetas, x, spec, users_per_step), in_shardings=(split, rep),
                 out_shardings=rep)


def pair_logits(thetas: np.ndarray, inputs: np.ndarray, spec: verifier.VerifierSpec = verifier.VerifierSpec(),
                chunk: int = 512) -> np.ndarray:
  """logits [U] of user u's verifier (thetas [U, D]) on input u alone (inputs [U, s, s, C]): the diagonal of
  `score_matrix`, computed directly, `chunk` rows at a time."""
  if len(thetas) != len(inputs):
    raise ValueError(f'pair_logits needs one input per user: {len(thetas)} thetas, {len(inputs)} inputs')
  pair = _pair_fn(spec)
  return np.concatenate([np.asarray(pair(jnp.asarray(thetas[i:i + chunk], jnp.float32), inputs[i:i + chunk]))
                         for i in range(0, len(inputs), chunk)])


@functools.lru_cache(maxsize=16)
def _pair_fn(spec):
  return jax.jit(jax.vmap(lambda theta, x: verifier.apply(theta, x[None], spec)[0]))


def calibrate(thetas: np.ndarray, calibration_set: calibration.CalibrationSet, far: float,
              spec: verifier.VerifierSpec = verifier.VerifierSpec()) -> list[calibration.Calibration]:
  """Each user's threshold at `far` (thetas [U, D]), from their verifiers' logits on the calibration faces."""
  impostor_logits = score_matrix(thetas, imageio.normalize(calibration_set.inputs), spec)
  return calibration.per_user(impostor_logits, far, calibration_set.identities)


def _pad_to(x: np.ndarray, n: int) -> np.ndarray:
  """Zero-pads the leading axis to n rows (fixed tile shapes compile once)."""
  return np.concatenate([x, np.zeros((n - len(x), *x.shape[1:]), x.dtype)]) if len(x) < n else x
