"""The tiny personalised verifier f(theta, images) -> logits of "is this the enrolled user".

Rozner et al. (FG 2024, arXiv 2312.13240) report an f of about 23k parameters
and 5M FLOPs whose weights theta are generated per user by a hypernetwork.
The layer table of the paper could not be read in this workplace (only its
abstract and introduction are reachable), so the default `VerifierSpec` is
our choice, made to match the published budget, and every field is
configurable: a 64x64 RGB input (the 112x112 aligned crop, resized by
`fvjax.edge.verifier_input`), four
3x3 convolutions (16, 32, 32, 32 channels; strides 2, 2, 2, 1) with ReLU,
global average pooling and a linear logit. Exact counts (tested):
23,617 parameters and 2,801,664 multiply-adds = 5.6M FLOPs per image.

f is a pure function of a flat parameter vector, so thousands of users are
scored at once with `jax.vmap` over theta (see `fvjax.eval.personalized`),
and a pure-NumPy twin (`fvjax.edge.numpy_forward`) runs a user file without JAX.
"""

import math

import jax
import jax.numpy as jnp

from fvjax.edge import VerifierSpec


def unflatten(theta: jax.Array, spec: VerifierSpec) -> dict[str, jax.Array]:
  """Flat theta [num_params] -> {name: tensor}."""
  if theta.shape != (spec.num_params,):
    raise ValueError(f'theta has shape {theta.shape}; this verifier needs ({spec.num_params},)')
  out, offset = {}, 0
  for name, shape in spec.layer_shapes():
    size = math.prod(shape)
    out[name] = theta[offset:offset + size].reshape(shape)
    offset += size
  return out


def flatten(params: dict[str, jax.Array], spec: VerifierSpec) -> jax.Array:
  """{name: tensor} -> flat theta [num_params] (inverse of `unflatten`)."""
  return jnp.concatenate([jnp.ravel(params[name]) for name, _ in spec.layer_shapes()])


def apply(theta: jax.Array, images: jax.Array, spec: VerifierSpec = VerifierSpec()) -> jax.Array:
  """f(theta, images): one user's verifier on [B, s, s, C] inputs -> logits [B]."""
  p = unflatten(theta, spec)
  x = images
  pad = spec.kernel // 2
  for i, stride in enumerate(spec.strides):
    x = jax.lax.conv_general_dilated(x, p[f'conv{i}/kernel'], (stride, stride), ((pad, pad), (pad, pad)),
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    x = jax.nn.relu(x + p[f'conv{i}/bias'])
  return jnp.mean(x, axis=(1, 2)) @ p['logit/kernel'] + p['logit/bias']


def init_theta(rng: jax.Array, spec: VerifierSpec = VerifierSpec()) -> jax.Array:
  """He-normal kernels, zero biases, as a flat theta (for tests and directly trained baselines)."""
  parts = []
  for i, (name, shape) in enumerate(spec.layer_shapes()):
    if name.endswith('kernel'):
      parts.append(jax.random.normal(jax.random.fold_in(rng, i), shape) * math.sqrt(2.0 / spec.fan_in(name)))
    else:
      parts.append(jnp.zeros(shape))
  return jnp.concatenate([jnp.ravel(t) for t in parts])
