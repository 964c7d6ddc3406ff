"""The pair objective of the personalised verifiers: every verifier of a batch scores every probe of it.

Given logits [U, P] (user u's verifier on probe p), who owns each probe and the frozen backbone's cosine between
each enrolment and each probe, the loss is

  weighted BCE on the identity labels (positives weighted `positive_weight`, default #negatives / #positives)
  + distill_weight * mean((logit / distill_scale - (cos - distill_centre))^2)
  + norm_weight * mean ||theta||^2.

The second term (ours, beyond the paper) gives every pair of the batch a graded target: the backbone's cosine
between the two faces, on a logit scale (`distill_scale` logits per unit of cosine, zero at `distill_centre`), so a
look-alike impostor teaches more than "no" and a poor genuine photo less than "yes". 0 turns it off (the paper's
objective). The cosines are those of the generator's centred input (`teacher_cosines`).
"""

import jax
import jax.numpy as jnp
import optax

from fvjax.models.layers import l2_normalize


def teacher_cosines(enrol: jax.Array, probes: jax.Array, centre: jax.Array) -> jax.Array:
  """Cosines [U, P] between enrolment [U, E] and probe [P, E] embeddings after moving both by `centre` [E]
  (the generator's input centre) and renormalising."""
  return l2_normalize(l2_normalize(enrol) - centre) @ l2_normalize(l2_normalize(probes) - centre).T


def pair_loss(logits: jax.Array, targets: jax.Array, cosines: jax.Array, *, positive_weight: float = 0.0,
              distill_weight: float = 0.0, distill_centre: float = 0.0, distill_scale: float = 1.0,
              mask: jax.Array | None = None) -> tuple[jax.Array, dict]:
  """(loss, metrics) of logits [U, P] against identity targets [U, P] (1: the probe is the user) and the teacher's
  cosines [U, P]; mask [U, P] (optional) leaves pairs out (a probe scored against itself)."""
  mask = jnp.ones_like(logits) if mask is None else mask.astype(logits.dtype)
  positives = jnp.sum(targets * mask)
  pos = positive_weight or (jnp.sum(mask) - positives) / positives
  weights = mask * jnp.where(targets > 0, pos, 1.0)
  bce = jnp.sum(weights * optax.sigmoid_binary_cross_entropy(logits, targets)) / jnp.sum(weights)
  distill = jnp.sum(mask * (logits / distill_scale - (cosines - distill_centre))**2) / jnp.sum(mask)
  accuracy = jnp.sum(mask * ((logits > 0) == (targets > 0))) / jnp.sum(mask)
  return bce + distill_weight * distill, {'bce': bce, 'distill': distill, 'pair_accuracy': accuracy}
