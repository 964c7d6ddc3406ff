"""Hypernetwork generator h_gen: enrolment embedding -> weights theta of the tiny verifier f.

h = h_gen o h_bb: the frozen backbone h_bb embeds the enrolment image(s);
h_gen (trained) maps the embedding to theta. Our design (the paper's generator
is not reproduced; every size is a field):

  L2-normalised embedding [E] -> Dense(hidden) -> ReLU -> Dense(hidden) -> ReLU
  -> LayerNorm -> one linear head per tensor of f -> raw values, each kernel
  scaled by sqrt(2 / fan_in) (biases by `bias_scale`).

The LayerNorm gives the heads unit-variance inputs, so (LeCun-initialised)
heads emit unit-variance values and the fan-in scaling turns them into
He-initialised verifier layers: a fresh generator already emits trainable nets.
Enrolment from several images averages their normalised embeddings (then
renormalises) before h_gen.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from fvjax.models.layers import l2_normalize
from fvjax.models.verifier import VerifierSpec


class WeightGenerator(nn.Module):
  """embeddings [U, E] -> thetas [U, num_params] of `spec`'s verifier.

  The normalised embedding is first moved by a fixed `input_centre` [E] (not trained: the gradient is stopped and
  weight decay skips vectors) and renormalised. Zero by default; training sets it to the mean training embedding
  (`with_input_centre`), because some backbones' embeddings share one dominant direction (dlib_resnet's unit
  descriptors average to a vector of norm 0.92 on CelebA): without it a fresh generator sees near-identical inputs
  for every user and emits one verifier for all, whose BCE never leaves ln 2.
  """
  spec: VerifierSpec = VerifierSpec()
  hidden: int = 256
  bias_scale: float = 0.1

  @nn.compact
  def __call__(self, embeddings: jax.Array) -> jax.Array:
    centre = jax.lax.stop_gradient(self.param('input_centre', nn.initializers.zeros, (embeddings.shape[-1],)))
    h = l2_normalize(l2_normalize(embeddings) - centre)
    h = nn.relu(nn.Dense(self.hidden, name='trunk0')(h))
    h = nn.relu(nn.Dense(self.hidden, name='trunk1')(h))
    h = nn.LayerNorm(name='trunk_norm')(h)
    parts = []
    for name, shape in self.spec.layer_shapes():
      size = math.prod(shape)
      raw = nn.Dense(size, kernel_init=nn.initializers.lecun_normal(), name=f'head_{name.replace("/", "_")}')(h)
      scale = math.sqrt(2.0 / self.spec.fan_in(name)) if name.endswith('kernel') else self.bias_scale
      parts.append(raw * scale)
    return jnp.concatenate(parts, axis=-1)


def with_input_centre(variables: dict, centre: jax.Array) -> dict:
  """`variables` of a WeightGenerator with its input_centre [E] replaced by `centre`."""
  return {**variables, 'params': {**variables['params'], 'input_centre': jnp.asarray(centre, jnp.float32)}}


def enrolment_embedding(embeddings: jax.Array) -> jax.Array:
  """One user's enrolment embedding from several images [n, E] -> [E] (mean of normalised, renormalised)."""
  if embeddings.ndim != 2 or embeddings.shape[0] == 0:
    raise ValueError(f'enrolment needs at least one image embedding [n, E], got shape {embeddings.shape}')
  return l2_normalize(jnp.mean(l2_normalize(embeddings), axis=0))
