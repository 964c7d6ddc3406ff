"""Training the learned quality head (`fvjax.models.quality.QualityHead`) on frozen features.

Target (a recognisability target in the spirit of SER-FIQ / SDD-FIQA, chosen because it needs nothing beyond the
training identities): the cosine of a face's unit feature to the L2-normalised sum of its identity's *other* clean
faces (leave-one-out, so a clean face is not compared with itself). A face that keeps its identity scores near
its clean peers; blurred, tiny, occluded or re-compressed faces score lower by as much identity as they lost.
Every training face enters twice: clean, and under its seeded strong degradation (`features.degraded_features`).
Full-batch Adam on a few thousand rows: seconds on a CPU.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fvjax.models.quality import QualityHead


def _unit(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def identity_targets(clean: np.ndarray, degraded: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(inputs [2n, C], targets [2n]) from raw features of n faces, clean [n, C] and degraded [n, C], with identity
  `labels` [n]: the clean rows then the degraded ones, each with its cosine to the sum of its identity's other
  clean faces. Faces whose identity has no other face are left out."""
  unit = _unit(clean)
  classes, inverse = np.unique(labels, return_inverse=True)
  sums = np.zeros((len(classes), unit.shape[1]), np.float64)
  np.add.at(sums, inverse, unit)
  keep = np.bincount(inverse)[inverse] >= 2
  peers = _unit(sums[inverse] - unit)[keep]
  targets = [np.sum(_unit(x)[keep] * peers, axis=1) for x in (clean, degraded)]
  return (np.concatenate([np.asarray(clean)[keep], np.asarray(degraded)[keep]]).astype(np.float32),
          np.concatenate(targets).astype(np.float32))


def fit(inputs: np.ndarray, targets: np.ndarray, hidden: int = 64, steps: int = 500, learning_rate: float = 1e-2,
        seed: int = 0) -> dict:
  """Params of a `QualityHead(hidden)` regressing `targets` [n] (clipped to [0, 1], its output range) from raw
  features `inputs` [n, C]: mean squared error, full-batch Adam for `steps` steps."""
  head = QualityHead(hidden)
  x, y = jnp.asarray(inputs), jnp.clip(jnp.asarray(targets), 0.0, 1.0)
  params = head.init(jax.random.key(seed), x[:1])['params']
  tx = optax.adam(learning_rate)

  def loss(p):
    return jnp.mean((head.apply({'params': p}, x) - y)**2)

  @jax.jit
  def run(params):
    def step(carry, _):
      p, state = carry
      grads = jax.grad(loss)(p)
      updates, state = tx.update(grads, state, p)
      return (optax.apply_updates(p, updates), state), None
    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
    return params

  return jax.device_get(run(params))
