"""SeesawFaceNet (arXiv 1908.09124) and the MobileFaceNet baseline (arXiv 1804.07573).

All five backbones share one skeleton, `FaceNet`, and differ only in the data
of a `FaceNetSpec`:

  stem 3x3/2 conv -> 3x3 depthwise -> stages (each: one stride-2 block, then
  residual blocks) -> 1x1 conv to 512 -> GDC (7x7 depthwise, linear)
  -> flatten -> Dense(E, no bias) -> BatchNorm1d.

Faithful to the reference PyTorch code (github cvtower/seesawfacenet_pytorch,
src/seesaw_models/) with one deliberate difference: the reference builds a
shortcut in every DW-v1/v2 residual block that its forward never uses
(671,232 dead parameters in DW v2); we do not.

Activation: the reference's `h_swish` is x * sigmoid(x) (swish), not the
hard-swish the paper's text names. Seesaw models default to 'swish' (what the
released weights were trained with); pass activation='hard_swish' for the
MobileNetV3 form. MobileFaceNet uses PReLU as in its paper.
"""

import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from fvjax.models.layers import BatchNorm, ConvBN, SqueezeExcite, channel_shuffle, max_pool_2x2

INPUT_SHAPE = (112, 112, 3)


@dataclasses.dataclass(frozen=True)
class Stage:
  """One resolution stage: a stride-2 block, then `num_residual` identity-shortcut blocks."""
  out_channels: int
  down_expansion: int  # expanded (depthwise) width of the stride-2 block
  num_residual: int
  expansion: int  # expanded width of the residual blocks


@dataclasses.dataclass(frozen=True)
class FaceNetSpec:
  """Architecture of a `FaceNet` as data.

  block: 'shuffle' | 'share' (seesaw blocks) | 'inverted_residual' (MobileFaceNet).
  downsample_shortcut: shortcut of the stride-2 blocks: None (none),
    'conv' (1x1 stride-2 conv-BN-act, DW v1) or 'pool_conv' (2x2 max-pool + 1x1
    conv-BN-act, DW v2).
  """
  block: str
  stem_channels: int
  stages: tuple[Stage, ...]
  downsample_shortcut: str | None = None
  use_se: bool = True
  head_channels: int = 512


class SeesawBlock(nn.Module):
  """Seesaw block: uneven 1/4 : 3/4 pointwise groups around a depthwise conv.

  'shuffle': expand [C/4 -> E/4 | 3C/4 -> 3E/4], 2-group channel shuffle,
    depthwise, SE, project [first E/4 -> O/4 | rest -> 3O/4].
  'share': as shuffle without the channel shuffle, but the projection takes the
    FIRST 3E/4 channels to 3O/4 and the LAST E/4 to O/4, so the offset between
    the two splits mixes the groups.
  """
  out_channels: int
  expansion: int
  stride: int
  mix: str  # 'shuffle' | 'share'
  shortcut: str | None  # 'identity' | 'conv' | 'pool_conv' | None
  use_se: bool = True
  activation: str = 'swish'
  dtype: jnp.dtype = jnp.float32
  depthwise_impl: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """[B, H, W, C] -> [B, H/stride, W/stride, out_channels]."""
    cin, e, o = x.shape[-1], self.expansion, self.out_channels
    conv = lambda features, **kw: ConvBN(features, dtype=self.dtype, depthwise_impl=self.depthwise_impl, **kw)
    h = jnp.concatenate([
        conv(e // 4, activation=self.activation, name='conv_1')(x[..., :cin // 4], train),
        conv(e - e // 4, activation=self.activation, name='conv_3')(x[..., cin // 4:], train),
    ], axis=-1)
    if self.mix == 'shuffle':
      h = channel_shuffle(h, 2)
    h = conv(e, kernel=3, stride=self.stride, depthwise=True, activation=self.activation, name='conv_dw')(h, train)
    if self.use_se:
      h = SqueezeExcite(dtype=self.dtype, name='se')(h)
    if self.mix == 'shuffle':
      h = jnp.concatenate([
          conv(o // 4, activation=None, name='project_1')(h[..., :e // 4], train),
          conv(o - o // 4, activation=None, name='project_3')(h[..., e // 4:], train),
      ], axis=-1)
    elif self.mix == 'share':
      h = jnp.concatenate([
          conv(o - o // 4, activation=None, name='project_3')(h[..., :e - e // 4], train),
          conv(o // 4, activation=None, name='project_1')(h[..., e - e // 4:], train),
      ], axis=-1)
    else:
      raise ValueError(f"unknown seesaw mix {self.mix!r}; expected 'shuffle' or 'share'")
    return h + _shortcut(self.shortcut, x, o, self.activation, self.dtype, train)


class InvertedResidual(nn.Module):
  """MobileFaceNet bottleneck: 1x1 expand -> 3x3 depthwise -> 1x1 linear project."""
  out_channels: int
  expansion: int
  stride: int
  shortcut: str | None  # 'identity' | None
  activation: str = 'prelu'
  dtype: jnp.dtype = jnp.float32
  depthwise_impl: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """[B, H, W, C] -> [B, H/stride, W/stride, out_channels]."""
    h = ConvBN(self.expansion, activation=self.activation, dtype=self.dtype, name='conv')(x, train)
    h = ConvBN(self.expansion, kernel=3, stride=self.stride, depthwise=True, activation=self.activation,
               dtype=self.dtype, depthwise_impl=self.depthwise_impl, name='conv_dw')(h, train)
    h = ConvBN(self.out_channels, activation=None, dtype=self.dtype, name='project')(h, train)
    return h + _shortcut(self.shortcut, x, self.out_channels, self.activation, self.dtype, train)


def _shortcut(kind: str | None, x: jax.Array, out_channels: int, activation: str, dtype, train: bool):
  """The block's shortcut branch (0 when the block has none)."""
  if kind is None:
    return 0.0
  if kind == 'identity':
    return x
  if kind == 'conv':
    return ConvBN(out_channels, stride=2, activation=activation, dtype=dtype, name='shortcut')(x, train)
  if kind == 'pool_conv':
    return ConvBN(out_channels, activation=activation, dtype=dtype, name='shortcut')(max_pool_2x2(x), train)
  raise ValueError(f'unknown shortcut {kind!r}')


class FaceNet(nn.Module):
  """Mobile face-embedding backbone built from a `FaceNetSpec`.

  Input: [B, 112, 112, 3] float images normalised to [-1, 1] (see
  `fvjax.imageio.normalize`). Output: [B, embedding_size] embeddings,
  NOT L2-normalised (margin heads such as AdaFace use the norm as a quality
  signal; `fvjax.models.l2_normalize` gives the matching form).
  """
  spec: FaceNetSpec
  embedding_size: int = 512
  activation: str = 'swish'
  dtype: jnp.dtype = jnp.float32
  depthwise_impl: str = 'auto'  # 'conv' | 'shift' | 'auto' (see layers.DepthwiseConv)

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    if images.ndim != 4 or tuple(images.shape[1:]) != INPUT_SHAPE:
      raise ValueError(f'FaceNet expects images of shape [B, 112, 112, 3] (NHWC), got {tuple(images.shape)}')
    spec, act, dtype = self.spec, self.activation, self.dtype
    x = ConvBN(spec.stem_channels, kernel=3, stride=2, activation=act, dtype=dtype, name='stem')(images, train)
    dw = self.depthwise_impl
    x = ConvBN(spec.stem_channels, kernel=3, depthwise=True, activation=act, dtype=dtype, depthwise_impl=dw,
               name='stem_dw')(x, train)
    for i, stage in enumerate(spec.stages):
      x = self._block(stage.out_channels, stage.down_expansion, 2, spec.downsample_shortcut, f'stage{i}_down')(x, train)
      for j in range(stage.num_residual):
        x = self._block(stage.out_channels, stage.expansion, 1, 'identity', f'stage{i}_res{j}')(x, train)
    x = ConvBN(spec.head_channels, activation=act, dtype=dtype, name='head_conv')(x, train)
    # Global depthwise convolution (GDC): a linear 7x7 depthwise conv over the 7x7 map.
    x = ConvBN(spec.head_channels, kernel=7, depthwise=True, activation=None, padding=0, dtype=dtype,
               depthwise_impl=dw, name='gdc')(x, train)
    x = x.reshape(x.shape[0], -1)
    x = nn.Dense(self.embedding_size, use_bias=False, dtype=dtype, name='embedding')(x)
    x = BatchNorm(dtype=dtype, name='embedding_bn')(x, train)
    chex.assert_shape(x, (images.shape[0], self.embedding_size))
    return x.astype(jnp.float32)

  def _block(self, out_channels: int, expansion: int, stride: int, shortcut: str | None, name: str) -> nn.Module:
    if self.spec.block == 'inverted_residual':
      return InvertedResidual(out_channels, expansion, stride, shortcut, self.activation, self.dtype,
                              self.depthwise_impl, name=name)
    return SeesawBlock(out_channels, expansion, stride, self.spec.block, shortcut, self.spec.use_se, self.activation,
                       self.dtype, self.depthwise_impl, name=name)


_MOBILE_STAGES = (Stage(64, 128, 4, 128), Stage(128, 256, 6, 256), Stage(128, 512, 2, 256))
_LARGE_STAGES = (Stage(96, 192, 8, 192), Stage(192, 384, 12, 384), Stage(192, 768, 4, 384))

SPECS = {
    'seesaw_shuffle': (FaceNetSpec('shuffle', 64, _MOBILE_STAGES), 'swish'),
    'seesaw_share': (FaceNetSpec('share', 64, _MOBILE_STAGES), 'swish'),
    'dw_seesaw_v1': (FaceNetSpec('shuffle', 96, _LARGE_STAGES, downsample_shortcut='conv'), 'swish'),
    'dw_seesaw_v2': (FaceNetSpec('shuffle', 96, _LARGE_STAGES, downsample_shortcut='pool_conv'), 'swish'),
    'mobilefacenet': (FaceNetSpec('inverted_residual', 64, _MOBILE_STAGES, use_se=False), 'prelu'),
}
