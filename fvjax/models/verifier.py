"""The tiny personalised verifier f(theta, images) -> logits of "is this the enrolled user".

Rozner et al. (FG 2024, arXiv 2312.13240) report an f of about 23k parameters
and 5M FLOPs whose weights theta are generated per user by a hypernetwork.
The layer table of the paper could not be read in this workplace (only its
abstract and introduction are reachable), so the default `VerifierSpec` is
our choice, made to match the published budget, and every field is
configurable: a 64x64 RGB input (the 112x112 aligned crop, resized), four
3x3 convolutions (16, 32, 32, 32 channels; strides 2, 2, 2, 1) with ReLU,
global average pooling and a linear logit. Exact counts (tested):
23,617 parameters and 2,801,664 multiply-adds = 5.6M FLOPs per image.

f is a pure function of a flat parameter vector, so thousands of users are
scored at once with `jax.vmap` over theta (see `fvjax.eval.personalized`),
and a pure-NumPy twin (`numpy_forward`) runs a user file without JAX.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class VerifierSpec:
  input_size: int = 64
  in_channels: int = 3
  channels: tuple[int, ...] = (16, 32, 32, 32)
  strides: tuple[int, ...] = (2, 2, 2, 1)
  kernel: int = 3

  def layer_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every tensor of theta, in the order they are packed."""
    shapes, cin = [], self.in_channels
    for i, cout in enumerate(self.channels):
      shapes += [(f'conv{i}/kernel', (self.kernel, self.kernel, cin, cout)), (f'conv{i}/bias', (cout,))]
      cin = cout
    return shapes + [('logit/kernel', (cin,)), ('logit/bias', ())]

  @property
  def num_params(self) -> int:
    return sum(math.prod(s) for _, s in self.layer_shapes())

  def fan_in(self, name: str) -> int:
    """Inputs feeding one output unit of the layer that owns tensor `name`."""
    shape = dict(self.layer_shapes())[name.rsplit('/', 1)[0] + '/kernel']
    return math.prod(shape[:-1]) if len(shape) > 1 else shape[0]


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


def preprocess(images: jax.Array, spec: VerifierSpec) -> jax.Array:
  """Normalised 112x112 faces [B, 112, 112, C] -> f's input [B, s, s, C] (area-average resize)."""
  if images.shape[1] == spec.input_size:
    return images
  return jax.image.resize(images, (images.shape[0], spec.input_size, spec.input_size, images.shape[3]), 'linear',
                          antialias=True)


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


def numpy_forward(theta: np.ndarray, images: np.ndarray, spec: VerifierSpec = VerifierSpec()) -> np.ndarray:
  """Reference forward of f in plain NumPy (what an edge device without JAX would run): logits [B]."""
  sizes = [math.prod(s) for _, s in spec.layer_shapes()]
  tensors = np.split(np.asarray(theta, np.float64), np.cumsum(sizes)[:-1])
  p = {name: t.reshape(shape) for (name, shape), t in zip(spec.layer_shapes(), tensors)}
  x = np.asarray(images, np.float64)
  k, pad = spec.kernel, spec.kernel // 2
  for i, stride in enumerate(spec.strides):
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out_h = (x.shape[1] + 2 * pad - k) // stride + 1
    out_w = (x.shape[2] + 2 * pad - k) // stride + 1
    # im2col: [B, H', W', k, k, Cin] . [k, k, Cin, Cout]
    cols = np.stack([np.stack([xp[:, di:di + stride * out_h:stride, dj:dj + stride * out_w:stride]
                               for dj in range(k)], axis=3) for di in range(k)], axis=3)
    x = np.maximum(np.tensordot(cols, p[f'conv{i}/kernel'], axes=3) + p[f'conv{i}/bias'], 0.0)
  return x.mean(axis=(1, 2)) @ p['logit/kernel'] + p['logit/bias']
