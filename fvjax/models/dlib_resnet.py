"""dlib's ResNet face recogniser (`dlib_face_recognition_resnet_model_v1`, Davis King) as a Flax module.

A 29-convolution ResNet on 150x150 RGB face chips -> a 128-d descriptor (dlib reports 99.38% on LFW). The layout
follows dlib's network and face-api.js's port of its weights (the weights fvjax ships, see `fvjax.pretrained`):

  conv 7x7/2 VALID (32) -> max-pool 3x3/2 VALID
  -> 3 x residual(32)
  -> residual_down(64) -> 3 x residual(64)
  -> residual_down(128) -> 2 x residual(128)
  -> residual_down(256) -> 2 x residual(256) -> residual_down(256)
  -> global average pool -> linear 256 -> 128 (no bias)

Every conv layer is conv (with bias) -> per-channel affine (x * weights + biases) -> ReLU (none after the second
conv of a residual block, which is activated after the addition). `residual_down` convolves 3x3/2 VALID then 3x3
SAME; its shortcut is a 2x2/2 average pool of the input, zero-padded in channels when the width doubles; where the
conv path is one pixel smaller than the shortcut it is zero-padded by one row at the bottom and one column at the
right. The descriptor is not normalised (dlib compares descriptors by Euclidean distance, threshold 0.6).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

CHIP_SIZE = 150
INPUT_SHAPE = (CHIP_SIZE, CHIP_SIZE, 3)
MEAN_RGB = (122.782, 117.001, 104.298)
INPUT_SCALE = 256.0
EMBEDDING_SIZE = 128
# (block name, width, stride-2 block): the blocks after the stem, in order.
BLOCKS = (
    ('conv32_1', 32, False), ('conv32_2', 32, False), ('conv32_3', 32, False),
    ('conv64_down', 64, True), ('conv64_1', 64, False), ('conv64_2', 64, False), ('conv64_3', 64, False),
    ('conv128_down', 128, True), ('conv128_1', 128, False), ('conv128_2', 128, False),
    ('conv256_down', 256, True), ('conv256_1', 256, False), ('conv256_2', 256, False),
    ('conv256_down_out', 256, True),
)


def preprocess(chips: jax.Array) -> jax.Array:
  """RGB pixel values in [0, 255] [..., 150, 150, 3] -> the network's input: (x - mean RGB) / 256, float32."""
  return (jnp.asarray(chips, jnp.float32) - jnp.asarray(MEAN_RGB, jnp.float32)) / INPUT_SCALE


class ConvLayer(nn.Module):
  """conv (bias) -> per-channel affine -> optional ReLU. x [B, H, W, Cin] -> [B, H', W', features]."""
  features: int
  kernel: int
  stride: int
  padding: str
  relu: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(self.features, (self.kernel, self.kernel), (self.stride, self.stride), padding=self.padding,
                name='conv')(x)
    scale = self.param('scale', nn.initializers.ones, (self.features,))
    shift = self.param('shift', nn.initializers.zeros, (self.features,))
    x = x * scale + shift
    return nn.relu(x) if self.relu else x


class ResidualBlock(nn.Module):
  """dlib's `ares` (stride 1, SAME) or `ares_down` (stride 2) block. x [B, H, W, Cin] -> [B, H', W', features]."""
  features: int
  down: bool

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.down:
      y = ConvLayer(self.features, 3, 2, 'VALID', name='conv1')(x)
    else:
      y = ConvLayer(self.features, 3, 1, 'SAME', name='conv1')(x)
    y = ConvLayer(self.features, 3, 1, 'SAME', relu=False, name='conv2')(y)
    shortcut = x
    if self.down:
      shortcut = nn.avg_pool(x, (2, 2), (2, 2), padding='VALID')
      shortcut = jnp.pad(shortcut, ((0, 0), (0, 0), (0, 0), (0, self.features - x.shape[-1])))
      pad_h, pad_w = shortcut.shape[1] - y.shape[1], shortcut.shape[2] - y.shape[2]
      y = jnp.pad(y, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    return nn.relu(y + shortcut)


class DlibResNet(nn.Module):
  """Preprocessed chips [B, 150, 150, 3] (see `preprocess`) -> raw 128-d descriptors [B, 128]."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = ConvLayer(32, 7, 2, 'VALID', name='conv32_down')(x)
    x = nn.max_pool(x, (3, 3), (2, 2), padding='VALID')
    for name, features, down in BLOCKS:
      x = ResidualBlock(features, down, name=name)(x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(EMBEDDING_SIZE, use_bias=False, name='fc')(x)


def params_from_face_api(tensors: dict[str, np.ndarray]) -> dict:
  """The module's params from face-api.js tensors named as in its weights manifest ('conv64_1/conv1/conv/filters',
  ..., 'fc'). Raises ValueError naming a tensor that is missing, left over, or of the wrong shape."""
  params = {}

  def conv_layer(prefix: str) -> dict:
    return {'conv': {'kernel': tensors[f'{prefix}/conv/filters'], 'bias': tensors[f'{prefix}/conv/bias']},
            'scale': tensors[f'{prefix}/scale/weights'], 'shift': tensors[f'{prefix}/scale/biases']}

  try:
    params['conv32_down'] = conv_layer('conv32_down')
    for name, _, _ in BLOCKS:
      params[name] = {layer: conv_layer(f'{name}/{layer}') for layer in ('conv1', 'conv2')}
    params['fc'] = {'kernel': tensors['fc']}
  except KeyError as e:
    raise ValueError(f'face-api weights lack the tensor {e.args[0]!r}') from e
  expected = {'/'.join(k.key for k in path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
  if len(expected) != len(tensors):
    raise ValueError(f'face-api weights hold {len(tensors)} tensors; the network uses {len(expected)}')
  template = jax.eval_shape(DlibResNet().init, jax.random.key(0), jnp.zeros((1, *INPUT_SHAPE)))['params']
  for (path, want), got in zip(jax.tree_util.tree_flatten_with_path(template)[0], jax.tree.leaves(params)):
    if tuple(want.shape) != tuple(got.shape):
      raise ValueError(f"tensor {'/'.join(k.key for k in path)} has shape {got.shape}, the network needs "
                       f'{want.shape}')
  return jax.tree.map(lambda a: np.asarray(a, np.float32), params)
