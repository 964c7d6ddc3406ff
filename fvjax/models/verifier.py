"""The tiny personalised verifier f(theta, images) -> logits of "is this the enrolled user".

Rozner et al. (FG 2024, arXiv 2312.13240) report an f of about 23k parameters
and 5M FLOPs whose weights theta are generated per user by a hypernetwork.
The paper's layer table is not reproduced: this layout is ours, at the
published budget, and every field of `VerifierSpec` is configurable: a 64x64 RGB input (the 112x112 aligned crop, resized by
`fvjax.edge.verifier_input`), four
3x3 convolutions (16, 32, 32, 32 channels; strides 2, 2, 2, 1) with ReLU,
global average pooling and a linear logit. Exact counts (tested):
23,617 parameters and 2,801,696 multiply-adds = 5.6M FLOPs per image. With `pooling='depthwise'` (a learned
weight per position and channel of the last 8x8x32 map instead of the mean): 25,665 and 2,803,744.

f is a pure function of a flat parameter vector, so thousands of users are
scored at once by mapping it over their thetas (`apply_many`: `lax.map` over
groups of users, each group a `jax.vmap`; see `fvjax.eval.personalized`),
and a pure-NumPy twin (`fvjax.edge.numpy_forward`) runs a user file without JAX.
"""

import math

import jax
import jax.numpy as jnp

from fvjax.edge import FEATURE_EPS, VerifierSpec
from fvjax.models.layers import l2_normalize


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


def _patches(x: jax.Array, k: int, stride: int, pad: int) -> jax.Array:
  """im2col: [B, H, W, C] -> [B, H', W', k*k*C], ordered to match an HWIO kernel reshaped to [k*k*C, O]."""
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  out_h = (x.shape[1] + 2 * pad - k) // stride + 1
  out_w = (x.shape[2] + 2 * pad - k) // stride + 1
  return jnp.concatenate([xp[:, i:i + stride * (out_h - 1) + 1:stride, j:j + stride * (out_w - 1) + 1:stride, :]
                          for i in range(k) for j in range(k)], axis=-1)


def _conv(x: jax.Array, kernel: jax.Array, stride: int, pad: int, impl: str) -> jax.Array:
  if impl == 'matmul':
    return _patches(x, kernel.shape[0], stride, pad) @ kernel.reshape(-1, kernel.shape[-1])
  if impl == 'xla':
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), ((pad, pad), (pad, pad)),
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  raise ValueError(f"unknown conv impl {impl!r}; expected 'auto', 'xla' or 'matmul'")


def _conv_layers(p: dict[str, jax.Array], x: jax.Array, spec: VerifierSpec, start: int, stop: int,
                 conv_impl: str) -> jax.Array:
  """f's convolutions with indices in [start, stop) (layer indices past the last convolution run none)."""
  for i in range(start, min(stop, len(spec.strides))):
    x = jax.nn.relu(_conv(x, p[f'conv{i}/kernel'], spec.strides[i], spec.kernel // 2, conv_impl) + p[f'conv{i}/bias'])
  return x


def stem(theta: jax.Array, images: jax.Array, spec: VerifierSpec, num_layers: int, conv_impl: str = 'xla') -> jax.Array:
  """f's first `num_layers` convolutions: images [B, s, s, C] -> activations [B, h, w, c], the input of
  `apply(..., from_layer=num_layers)`. When those layers are shared by every user (a generator with a shared base),
  they run once per probe instead of once per (user, probe) pair."""
  return _conv_layers(unflatten(theta, spec), images, spec, 0, num_layers, conv_impl)


def apply(theta: jax.Array, images: jax.Array, spec: VerifierSpec = VerifierSpec(), conv_impl: str = 'xla',
          from_layer: int = 0) -> jax.Array:
  """f(theta, images): one user's verifier on [B, s, s, C] inputs -> logits [B].

  conv_impl: 'xla' (native convolution: the fastest forward, CPU included) or
  'matmul' (im2col + matmul, same values: on XLA:CPU its gradient w.r.t. theta
  is 15x faster, which generator training needs; its forward is ~2x slower).
  from_layer: `images` are the activations of `stem(theta, ..., from_layer)`; f runs from there on.
  """
  p = unflatten(theta, spec)
  return _pooled(p, images, spec, conv_impl, from_layer) @ p['logit/kernel'] + p['logit/bias']


def features(theta: jax.Array, images: jax.Array, spec: VerifierSpec, conv_impl: str = 'xla',
             from_layer: int = 0) -> jax.Array:
  """What f's logit layer reads: pooled features [B, c] of images [B, s, s, C] (L2-normalised when the spec says).
  from_layer: as in `apply`."""
  return _pooled(unflatten(theta, spec), images, spec, conv_impl, from_layer)


def enrolment_features(theta: jax.Array, inputs: jax.Array, spec: VerifierSpec) -> jax.Array:
  """f's features [U, c] of enrolment inputs [U, s, s, C], or of [U, n, s, s, C]: the mean of each user's n
  L2-normalised features, renormalised (order-invariant in the n images)."""
  g = features(theta, inputs.reshape(-1, *inputs.shape[-3:]), spec).reshape(*inputs.shape[:-3], -1)
  return l2_normalize(jnp.mean(l2_normalize(g), axis=1)) if g.ndim == 3 else g


def _pooled(p: dict[str, jax.Array], x: jax.Array, spec: VerifierSpec, conv_impl: str, from_layer: int) -> jax.Array:
  x = _conv_layers(p, x, spec, from_layer, len(spec.strides), conv_impl)
  pooled = jnp.einsum('bhwc,hwc->bc', x, p['pool/kernel']) if spec.pooling == 'depthwise' else jnp.mean(x, (1, 2))
  if spec.normalize_features:
    pooled = pooled * jax.lax.rsqrt(jnp.sum(pooled**2, axis=-1, keepdims=True) + FEATURE_EPS)
  return pooled


def apply_many(thetas: jax.Array, inputs: jax.Array, spec: VerifierSpec = VerifierSpec(), users_per_step: int = 1,
               conv_impl: str = 'xla', from_layer: int = 0) -> jax.Array:
  """Every user's f on every input: thetas [U, D], inputs [P, s, s, C] -> logits [U, P].

  `jax.lax.map` over the users in groups of `users_per_step`, each group a
  `jax.vmap` of `apply` over theta (XLA lowers the per-user kernels to grouped
  convolutions). users_per_step=1: one dense convolution of all P inputs per
  user; users_per_step >= U: a single vmap over every user. Measured with
  `benchmarks/personalized.py` (U = 10,000, P = 1,000): 1 is the fastest both on
  XLA:CPU (6x a full vmap, 2 cores) and on an H100 (1.7x groups of 32).
  conv_impl, from_layer: as in `apply` (inputs [P, h, w, c] from `stem` when from_layer > 0).
  """
  if users_per_step < 1:
    raise ValueError(f'users_per_step must be >= 1, got {users_per_step}')
  return jax.lax.map(lambda t: apply(t, inputs, spec, conv_impl, from_layer), thetas,
                     batch_size=users_per_step if users_per_step > 1 else None)


def init_theta(rng: jax.Array, spec: VerifierSpec = VerifierSpec()) -> jax.Array:
  """He-normal convolution and logit kernels, zero biases, depthwise pooling that starts as the mean, as a flat
  theta (for tests and directly trained baselines)."""
  parts = []
  for i, (name, shape) in enumerate(spec.layer_shapes()):
    if name == 'pool/kernel':
      parts.append(jnp.full(shape, 1.0 / spec.fan_in(name)))  # fan-in m*m: the mean
    elif name.endswith('kernel'):
      parts.append(jax.random.normal(jax.random.fold_in(rng, i), shape) * math.sqrt(2.0 / spec.fan_in(name)))
    else:
      parts.append(jnp.zeros(shape))
  return jnp.concatenate([jnp.ravel(t) for t in parts])
