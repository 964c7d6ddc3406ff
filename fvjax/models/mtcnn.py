"""MTCNN's three networks (Zhang et al., IEEE SPL 2016) as Flax modules: P-Net, R-Net, O-Net.

Each takes RGB pixels scaled as (x - 127.5) / 128, NHWC, and returns the face probability (softmax over
not-face / face, index 1), box offsets (x1, y1, x2, y2 as fractions of the box's side) and, for O-Net, five
landmarks. The facts that decide the outputs, from the original release: convolutions are 'valid'; every max-pool
rounds its output size up (a partial window at the edge is pooled); PReLU has one slope per channel; and the dense
layers read the feature map flattened in (width, height, channel) order, because the networks were trained on
transposed images.

`variables_from_reference` maps the reference state dicts (PyTorch layouts, as `../shared/models/mtcnn/*.npz` and
facenet-pytorch hold them) to these modules' variables; `fvjax/pretrained/mtcnn/mtcnn.npz` is that conversion.
"""

from typing import Mapping

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

NETWORKS = ('pnet', 'rnet', 'onet')
PNET_CELL = 12  # P-Net scores one 12x12 window per output cell...
PNET_STRIDE = 2  # ...every 2 pixels
RNET_SIZE = 24
ONET_SIZE = 48


def normalize(pixels):
  """RGB values in [0, 255] -> MTCNN's input scale, (x - 127.5) / 128."""
  return (pixels - 127.5) * 0.0078125


class PReLU(nn.Module):
  """max(x, 0) + alpha * min(x, 0) with one alpha per channel (the last axis)."""

  @nn.compact
  def __call__(self, x):
    alpha = self.param('alpha', nn.initializers.constant(0.25), (x.shape[-1],))
    return jnp.maximum(x, 0) + alpha * jnp.minimum(x, 0)


def max_pool_ceil(x, window: int, stride: int):
  """Max-pool [B, H, W, C] whose output size rounds up: ceil((H - window) / stride) + 1 rows (and columns)."""
  pads = [(0, (-(-(n - window) // stride)) * stride + window - n) for n in x.shape[1:3]]
  return nn.max_pool(x, (window, window), (stride, stride), padding=pads)


def conv_prelu(x, features: int, kernel: int, index: int):
  """'valid' convolution `conv{index}` followed by its PReLU `prelu{index}`."""
  x = nn.Conv(features, (kernel, kernel), padding='VALID', name=f'conv{index}')(x)
  return PReLU(name=f'prelu{index}')(x)


def flatten_transposed(x):
  """[B, H, W, C] -> [B, W * H * C] in (width, height, channel) order, the order the dense layers were trained on."""
  return jnp.transpose(x, (0, 2, 1, 3)).reshape(x.shape[0], -1)


def pnet_output_size(n: int) -> int:
  """P-Net's output cells along an input side of n pixels: conv 3, ceil-pool 2/2, conv 3, conv 3."""
  return -(-(n - 4) // 2) + 1 - 4


class PNet(nn.Module):
  """Fully convolutional proposal network: [B, H, W, 3] -> face probability [B, h, w], offsets [B, h, w, 4], one
  12x12 window every 2 pixels (h = pnet_output_size(H)).

  valid_hw: optional (height, width) of the real image inside a zero-padded input; the pixels beyond it are kept
  out of the ceil-mode pool, so the output cells of the real image equal those of the unpadded image.
  """

  @nn.compact
  def __call__(self, x, valid_hw=None):
    x = conv_prelu(x, 10, 3, 1)
    if valid_hw is not None:
      rows = jnp.arange(x.shape[1]) < valid_hw[0] - 2
      cols = jnp.arange(x.shape[2]) < valid_hw[1] - 2
      x = jnp.where((rows[:, None] & cols[None, :])[None, :, :, None], x, -jnp.inf)
    x = max_pool_ceil(x, 2, 2)
    x = jnp.where(jnp.isfinite(x), x, 0.0)  # windows wholly beyond valid_hw: their cells are discarded anyway
    x = conv_prelu(x, 16, 3, 2)
    x = conv_prelu(x, 32, 3, 3)
    face = nn.softmax(nn.Conv(2, (1, 1), name='conv4_1')(x))[..., 1]
    offsets = nn.Conv(4, (1, 1), name='conv4_2')(x)
    return face, offsets


class RNet(nn.Module):
  """Refinement network: [B, 24, 24, 3] -> face probability [B], offsets [B, 4]."""

  @nn.compact
  def __call__(self, x):
    x = max_pool_ceil(conv_prelu(x, 28, 3, 1), 3, 2)
    x = max_pool_ceil(conv_prelu(x, 48, 3, 2), 3, 2)
    x = flatten_transposed(conv_prelu(x, 64, 2, 3))
    x = PReLU(name='prelu4')(nn.Dense(128, name='dense4')(x))
    face = nn.softmax(nn.Dense(2, name='dense5_1')(x))[..., 1]
    return face, nn.Dense(4, name='dense5_2')(x)


class ONet(nn.Module):
  """Output network: [B, 48, 48, 3] -> face probability [B], offsets [B, 4], landmarks [B, 10] (five x as
  fractions of the box width from its left edge, then five y as fractions of its height from its top edge; left
  eye, right eye, nose, left and right mouth corner)."""

  @nn.compact
  def __call__(self, x):
    x = max_pool_ceil(conv_prelu(x, 32, 3, 1), 3, 2)
    x = max_pool_ceil(conv_prelu(x, 64, 3, 2), 3, 2)
    x = max_pool_ceil(conv_prelu(x, 64, 3, 3), 2, 2)
    x = flatten_transposed(conv_prelu(x, 128, 2, 4))
    x = PReLU(name='prelu5')(nn.Dense(256, name='dense5')(x))
    face = nn.softmax(nn.Dense(2, name='dense6_1')(x))[..., 1]
    return face, nn.Dense(4, name='dense6_2')(x), nn.Dense(10, name='dense6_3')(x)


def variables_from_reference(state_dict: Mapping[str, np.ndarray]) -> dict:
  """One network's reference state dict (PyTorch layouts: conv [out, in, kh, kw], dense [out, in], prelu [C]) ->
  its Flax variables {'params': {...}} (conv kernels [kh, kw, in, out], dense [in, out], 'alpha')."""
  params = {}
  for key, value in state_dict.items():
    layer, kind = key.rsplit('.', 1)
    value = np.asarray(value, np.float32)
    if layer.startswith('prelu'):
      params[layer] = {'alpha': value}
    elif kind == 'bias':
      params.setdefault(layer, {})['bias'] = value
    else:
      kernel = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T
      params.setdefault(layer, {})['kernel'] = kernel
  return {'params': params}
