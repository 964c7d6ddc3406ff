"""Building blocks shared by the face backbones (NHWC throughout).

Conventions follow the PyTorch reference implementations so that parameter
counts match exactly: convolutions have no bias and are followed by
BatchNorm (momentum 0.9 here == 0.1 in PyTorch, eps 1e-5); padding is
explicit and symmetric (PyTorch style), never XLA's asymmetric 'SAME'.
"""

import functools
import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """x / max(||x||, eps) along `axis`; its gradient is finite at x = 0 (where it is 0)."""
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=True), eps * eps))


def swish(x: jax.Array) -> jax.Array:
  """x * sigmoid(x): what the SeesawFaceNet reference code calls `h_swish`."""
  return x * jax.nn.sigmoid(x)


def hard_swish(x: jax.Array) -> jax.Array:
  """MobileNetV3's hard-swish x * relu6(x + 3) / 6 (the paper's written h-swish)."""
  return x * jax.nn.relu6(x + 3.0) / 6.0


class PReLU(nn.Module):
  """Per-channel PReLU (PyTorch `nn.PReLU(C)`): one slope per channel, init 0.25.

  `flax.linen.PReLU` learns a single scalar; face backbones use one per channel.
  """

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    alpha = self.param('alpha', nn.initializers.constant(0.25), (x.shape[-1],))
    return jnp.where(x >= 0, x, alpha.astype(x.dtype) * x)


ACTIVATIONS = {'swish': swish, 'hard_swish': hard_swish, 'prelu': None}


def activation_layer(name: str) -> Callable[[jax.Array], jax.Array]:
  """Returns the activation `name` ('swish', 'hard_swish' or 'prelu')."""
  if name not in ACTIVATIONS:
    raise ValueError(f'unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}')
  return PReLU() if name == 'prelu' else ACTIVATIONS[name]


def _tap_window(xp: jax.Array, i: int, j: int, stride: int, out_h: int, out_w: int) -> jax.Array:
  """xp[:, i + stride*y, j + stride*x, :] for y < out_h, x < out_w: the inputs that tap (i, j) reads."""
  return xp[:, i:i + stride * (out_h - 1) + 1:stride, j:j + stride * (out_w - 1) + 1:stride, :]


def _shifted_sum(xp: jax.Array, kernel: jax.Array, stride: int, out_h: int, out_w: int) -> jax.Array:
  """sum over taps (i, j) of the tap's window of xp times kernel[i, j, 0]: [B, out_h, out_w, C]."""
  k = kernel.shape[0]
  out = jnp.zeros((xp.shape[0], out_h, out_w, xp.shape[3]), xp.dtype)
  for i in range(k):
    for j in range(k):
      out = out + _tap_window(xp, i, j, stride, out_h, out_w) * kernel[i, j, 0].astype(xp.dtype)
  return out


def _output_size(size: int, k: int, stride: int, pad: int) -> int:
  return (size + 2 * pad - k) // stride + 1


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def depthwise_conv_shifted(x: jax.Array, kernel: jax.Array, stride: int, pad: int) -> jax.Array:
  """Depthwise conv as a sum of k*k shifted element-wise products.

  x [B, H, W, C], kernel [k, k, 1, C] -> [B, H', W', C]. Same result as the
  grouped convolution (to float rounding); on XLA:CPU, where grouped
  convolutions are slow, 7-14x faster forward and backward.

  The backward pass is written in the same form (a custom VJP): the input
  gradient is the shifted sum of the stride-dilated, padded output gradient
  with the flipped kernel, and the kernel gradient is one reduction per tap.
  Differentiating the forward instead would pad a full-size copy of the output
  gradient for every tap.
  """
  k = kernel.shape[0]
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  return _shifted_sum(xp, kernel, stride, _output_size(x.shape[1], k, stride, pad),
                      _output_size(x.shape[2], k, stride, pad))


def _depthwise_forward(x, kernel, stride, pad):
  return depthwise_conv_shifted(x, kernel, stride, pad), (x, kernel)


def _depthwise_backward(stride, pad, residuals, g):
  # The barrier keeps XLA from sharing the backward's windows of x with the forward's (common subexpressions),
  # which would write every window to memory instead of reading each one where it is used.
  x, kernel = jax.lax.optimization_barrier(residuals)
  k, (_, height, width, _) = kernel.shape[0], x.shape
  out_h, out_w = g.shape[1:3]
  # Input gradient: dx[y] = sum_i gd[y + pad - i] kernel[i], gd being g dilated by `stride` (zeros between rows).
  # Padding gd by k-1-pad in front (and to length H+k-1 behind) makes that a stride-1 shifted sum with the
  # flipped kernel.
  low = k - 1 - pad
  high_h, high_w = (height + pad - 1) - (out_h - 1) * stride, (width + pad - 1) - (out_w - 1) * stride
  gp = jax.lax.pad(g, jnp.zeros((), g.dtype),
                   ((0, 0, 0), (low, high_h, stride - 1), (low, high_w, stride - 1), (0, 0, 0)))
  dx = _shifted_sum(gp, kernel[::-1, ::-1], 1, height, width)
  return dx, _depthwise_kernel_gradient(x, g, k, stride, pad).astype(kernel.dtype)


# Images per pass of the kernel gradient's loop: measured on XLA:CPU at the seesaw/MobileFaceNet shapes (batch
# 64), 2 images per pass was fastest, 1.5-2.5x faster than one reduction over the whole batch per tap.
_KERNEL_GRADIENT_IMAGES = 2


def _depthwise_kernel_gradient(x: jax.Array, g: jax.Array, k: int, stride: int, pad: int) -> jax.Array:
  """dkernel [k, k, 1, C]: tap (i, j) is the sum over images and positions of its input window times g.

  x [B, H, W, C], g [B, H', W', C]. A loop over a few images at a time keeps each pass's windows in cache:
  XLA:CPU's reductions cannot fuse the window slices, so one reduction over the whole batch per tap writes every
  window to memory and reads it back, k*k times the input's size in memory traffic.
  """
  images = math.gcd(x.shape[0], _KERNEL_GRADIENT_IMAGES)
  xs = x.reshape(-1, images, *x.shape[1:])
  gs = g.reshape(-1, images, *g.shape[1:])
  out_h, out_w = g.shape[1:3]

  def add_chunk(n, dkernel):
    xp = jnp.pad(xs[n], ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    taps = jnp.stack([jnp.sum(_tap_window(xp, i, j, stride, out_h, out_w) * gs[n], axis=(0, 1, 2))
                      for i in range(k) for j in range(k)])
    return dkernel + taps.astype(dkernel.dtype)

  accumulator = jnp.zeros((k * k, x.shape[-1]), jnp.promote_types(x.dtype, jnp.float32))
  dkernel = jax.lax.fori_loop(0, xs.shape[0], add_chunk, accumulator)
  return dkernel.reshape(k, k, 1, x.shape[-1])


depthwise_conv_shifted.defvjp(_depthwise_forward, _depthwise_backward)


class DepthwiseConv(nn.Module):
  """Depthwise k x k conv, no bias; kernel [k, k, 1, C] as `nn.Conv(feature_group_count=C)`.

  impl: 'conv' (XLA grouped convolution: best on GPU/TPU), 'shift'
  (`depthwise_conv_shifted`: best on CPU), or 'auto' (shift on the CPU backend).
  Both give the same parameters, so checkpoints move freely between them.
  """
  kernel_size: int
  stride: int = 1
  padding: int = 0
  impl: str = 'auto'
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels, k = x.shape[-1], self.kernel_size
    kernel = self.param('kernel', nn.initializers.variance_scaling(2.0, 'fan_out', 'normal'), (k, k, 1, channels))
    impl = ('shift' if jax.default_backend() == 'cpu' else 'conv') if self.impl == 'auto' else self.impl
    x = x.astype(self.dtype)
    if impl == 'shift':
      return depthwise_conv_shifted(x, kernel, self.stride, self.padding)
    if impl != 'conv':
      raise ValueError(f"unknown depthwise impl {self.impl!r}; expected 'auto', 'conv' or 'shift'")
    return jax.lax.conv_general_dilated(
        x, kernel.astype(self.dtype), (self.stride, self.stride), ((self.padding, self.padding),) * 2,
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=channels)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float
                     ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Training-mode BatchNorm over all axes but the last: (y, batch mean, biased batch variance).

  x [..., C], scale and bias [C]. The same values as `flax.linen.BatchNorm` (its fast variance,
  E[x^2] - E[x]^2). The backward pass is the closed form (two reductions and one element-wise pass) as a
  custom VJP; the autodiff of the forward takes several more passes over x, which on XLA:CPU cost about as
  much as the convolutions.
  """
  return _batch_norm_forward(x, scale, bias, epsilon)[0]


def _batch_norm_statistics(x, epsilon):
  axes = tuple(range(x.ndim - 1))
  mean = jnp.mean(x, axis=axes)
  var = jnp.maximum(jnp.mean(x * x, axis=axes) - mean * mean, 0.0)
  return mean, var, jax.lax.rsqrt(var + epsilon)


def _batch_norm_forward(x, scale, bias, epsilon):
  mean, var, inv = _batch_norm_statistics(x, epsilon)
  y = (x - mean) * (inv * scale) + bias
  return (y, mean, var), (x, scale, mean, inv)


def _batch_norm_backward(epsilon, residuals, cotangents):
  del epsilon  # in the residuals' inv
  x, scale, mean, inv = residuals
  g, g_mean, g_var = cotangents
  n = x.size // x.shape[-1]
  axes = tuple(range(x.ndim - 1))
  centred = x - mean
  g_bias = jnp.sum(g, axis=axes)
  g_scale = jnp.sum(g * centred, axis=axes) * inv
  # d/dx of (x - mean) * inv with mean and inv depending on x, plus the direct paths of the mean and variance outputs.
  gx = (inv * scale) * (g - (g_bias + centred * (inv * g_scale)) / n) + (g_mean + 2.0 * g_var * centred) / n
  return gx, g_scale, g_bias


batch_norm_train.defvjp(_batch_norm_forward, _batch_norm_backward)


class BatchNorm(nn.Module):
  """BatchNorm over all axes but the last, with `flax.linen.BatchNorm`'s variables and running-average rule.

  Parameters 'scale' and 'bias', statistics 'mean' and 'var' in 'batch_stats' (so checkpoints are
  interchangeable with `nn.BatchNorm`); `momentum` 0.9 here is PyTorch's 0.1. Training uses
  `batch_norm_train` (closed-form backward).
  """
  momentum: float = BN_MOMENTUM
  epsilon: float = BN_EPSILON
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """[..., C] -> [..., C]."""
    channels = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (channels,))
    bias = self.param('bias', nn.initializers.zeros, (channels,))
    ra_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros((channels,), jnp.float32))
    ra_var = self.variable('batch_stats', 'var', lambda: jnp.ones((channels,), jnp.float32))
    x = x.astype(self.dtype)
    if not train:
      inv = jax.lax.rsqrt(ra_var.value + self.epsilon) * scale
      return ((x - ra_mean.value.astype(self.dtype)) * inv.astype(self.dtype) + bias.astype(self.dtype))
    y, mean, var = batch_norm_train(x, scale.astype(self.dtype), bias.astype(self.dtype), self.epsilon)
    if not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean.astype(jnp.float32)
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var.astype(jnp.float32)
    return y


class ConvBN(nn.Module):
  """Conv (no bias) -> BatchNorm -> optional activation.

  Attributes:
    features: output channels.
    kernel: square kernel size.
    stride: square stride.
    depthwise: one group per input channel (requires features == input channels).
    activation: 'swish' | 'hard_swish' | 'prelu' | None (linear block).
  """
  features: int
  kernel: int = 1
  stride: int = 1
  depthwise: bool = False
  activation: str | None = 'swish'
  padding: int | None = None  # default: kernel // 2 (PyTorch-style symmetric)
  dtype: jnp.dtype = jnp.float32  # compute dtype; parameters stay float32
  depthwise_impl: str = 'auto'  # see DepthwiseConv

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """[B, H, W, Cin] -> [B, H', W', features]."""
    pad = self.kernel // 2 if self.padding is None else self.padding
    if self.depthwise and self.features != x.shape[-1]:
      raise ValueError(f'depthwise conv needs features == input channels, got {self.features} vs {x.shape[-1]}')
    if self.depthwise:
      x = DepthwiseConv(self.kernel, self.stride, pad, self.depthwise_impl, self.dtype, name='conv')(x)
    elif self.kernel == 1 and pad == 0:
      # Pointwise conv as a matmul over channels: same math, ~4x faster backward than a 1x1 conv on XLA:CPU.
      x = nn.Dense(self.features, use_bias=False, kernel_init=nn.initializers.variance_scaling(2.0, 'fan_out', 'normal'),
                   dtype=self.dtype, name='conv')(x[:, ::self.stride, ::self.stride, :])
    else:
      x = nn.Conv(self.features, (self.kernel, self.kernel), strides=(self.stride, self.stride),
                  padding=((pad, pad), (pad, pad)), use_bias=False,
                  kernel_init=nn.initializers.variance_scaling(2.0, 'fan_out', 'normal'), dtype=self.dtype,
                  name='conv')(x)
    x = BatchNorm(dtype=self.dtype, name='bn')(x, train)
    if self.activation is not None:
      x = activation_layer(self.activation)(x)
    return x


class SqueezeExcite(nn.Module):
  """SE gate of the SeesawFaceNet reference: GAP -> Dense(C/r) -> PReLU -> Dense(C) -> sigmoid."""
  reduction: int = 4
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, H, W, C] -> [B, H, W, C]."""
    channels = x.shape[-1]
    y = jnp.mean(x, axis=(1, 2))
    y = nn.Dense(channels // self.reduction, dtype=self.dtype, name='fc1')(y)
    y = PReLU(name='prelu')(y)
    y = nn.Dense(channels, dtype=self.dtype, name='fc2')(y)
    return x * jax.nn.sigmoid(y)[:, None, None, :]


def channel_shuffle(x: jax.Array, groups: int) -> jax.Array:
  """ShuffleNet channel shuffle: [B, H, W, G*n] channel g*n+j moves to j*G+g."""
  *lead, channels = x.shape
  if channels % groups:
    raise ValueError(f'{channels} channels cannot be shuffled into {groups} groups')
  x = x.reshape(*lead, groups, channels // groups)
  return jnp.swapaxes(x, -1, -2).reshape(*lead, channels)


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max pooling with stride 2 ([B, H, W, C] -> [B, H/2, W/2, C])."""
  return nn.max_pool(x, (2, 2), strides=(2, 2))
