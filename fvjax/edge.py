"""What an edge device runs after enrolment: the verifier f in plain NumPy (no JAX).

`VerifierSpec` describes f (see `fvjax.models.verifier` for the JAX version
and the architecture notes); `verifier_input` is f's host preprocessing,
shared by training, evaluation and `fvjax verify`, so the same image gives the
same input everywhere.
"""

import dataclasses
import math

import numpy as np

from fvjax.imageio import normalize, resize


FEATURE_EPS = 1e-12  # inside the square root of `normalize_features`: all-zero features stay zero
POOLINGS = ('mean', 'depthwise')


@dataclasses.dataclass(frozen=True)
class VerifierSpec:
  input_size: int = 64
  in_channels: int = 3
  channels: tuple[int, ...] = (16, 32, 32, 32)
  strides: tuple[int, ...] = (2, 2, 2, 1)
  kernel: int = 3
  # L2-normalise the pooled features before the logit layer (the logit is then a scaled cosine between the
  # features and the generated kernel). Off in the paper-faithful layout; measured in experiments/README.md.
  normalize_features: bool = False
  # How f pools its last feature map [m, m, c] to [c]: 'mean' (global average; the paper-faithful layout) or
  # 'depthwise' (a learned weight per position and channel, MobileFaceNet's global depthwise convolution, m*m*c more
  # weights; faces are aligned, so where on the face a feature fires carries identity). Measured in
  # experiments/README.md.
  pooling: str = 'mean'

  def __post_init__(self):
    if self.pooling not in POOLINGS:
      raise ValueError(f'unknown verifier pooling {self.pooling!r}; expected one of {POOLINGS}')

  @property
  def feature_map_size(self) -> int:
    """m: the side of f's last feature map (padding kernel // 2 keeps a stride-1 map's size)."""
    size = self.input_size
    for stride in self.strides:
      size = (size + 2 * (self.kernel // 2) - self.kernel) // stride + 1
    return size

  def layer_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every tensor of theta, in the order they are packed."""
    shapes, cin = [], self.in_channels
    for i, cout in enumerate(self.channels):
      shapes += [(f'conv{i}/kernel', (self.kernel, self.kernel, cin, cout)), (f'conv{i}/bias', (cout,))]
      cin = cout
    if self.pooling == 'depthwise':
      shapes.append(('pool/kernel', (self.feature_map_size, self.feature_map_size, cin)))
    return shapes + [('logit/kernel', (cin,)), ('logit/bias', ())]

  @property
  def layer_names(self) -> list[str]:
    """f's layers in order: 'conv0', ..., ['pool',] 'logit' (a layer owns the tensors '<layer>/kernel' and
    '<layer>/bias' it has)."""
    pool = ['pool'] if self.pooling == 'depthwise' else []
    return [f'conv{i}' for i in range(len(self.channels))] + pool + ['logit']

  @property
  def num_params(self) -> int:
    return sum(math.prod(s) for _, s in self.layer_shapes())

  def fan_in(self, name: str) -> int:
    """Inputs feeding one output unit of the layer that owns tensor `name`."""
    shape = dict(self.layer_shapes())[name.rsplit('/', 1)[0] + '/kernel']
    return math.prod(shape[:-1]) if len(shape) > 1 else shape[0]

  def to_dict(self) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

  @classmethod
  def from_dict(cls, d: dict) -> 'VerifierSpec':
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def verifier_pixels(faces: np.ndarray, spec: VerifierSpec) -> np.ndarray:
  """uint8 aligned faces [N, 112, 112, 3] -> uint8 [N, s, s, 3] at f's input size (a quarter of the float bytes)."""
  return np.stack([resize(face, spec.input_size) for face in faces])


def verifier_input(faces: np.ndarray, spec: VerifierSpec) -> np.ndarray:
  """uint8 aligned faces [N, 112, 112, 3] -> f's float32 inputs [N, s, s, 3] in [-1, 1]."""
  return normalize(verifier_pixels(faces, spec))


def numpy_forward(theta: np.ndarray, inputs: np.ndarray, spec: VerifierSpec = VerifierSpec()) -> np.ndarray:
  """f(theta, inputs) in plain NumPy: inputs [B, s, s, C] -> logits [B]."""
  theta = np.asarray(theta, np.float64)
  if theta.shape != (spec.num_params,):
    raise ValueError(f'theta has shape {theta.shape}; this verifier needs ({spec.num_params},)')
  sizes = [math.prod(s) for _, s in spec.layer_shapes()]
  tensors = np.split(theta, np.cumsum(sizes)[:-1])
  p = {name: t.reshape(shape) for (name, shape), t in zip(spec.layer_shapes(), tensors)}
  x = np.asarray(inputs, np.float64)
  k, pad = spec.kernel, spec.kernel // 2
  for i, stride in enumerate(spec.strides):
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out_h = (x.shape[1] + 2 * pad - k) // stride + 1
    out_w = (x.shape[2] + 2 * pad - k) // stride + 1
    # im2col: [B, H', W', k, k, Cin] contracted with the kernel [k, k, Cin, Cout]
    cols = np.stack([np.stack([xp[:, di:di + stride * out_h:stride, dj:dj + stride * out_w:stride]
                               for dj in range(k)], axis=3) for di in range(k)], axis=3)
    x = np.maximum(np.tensordot(cols, p[f'conv{i}/kernel'], axes=3) + p[f'conv{i}/bias'], 0.0)
  pooled = np.einsum('bhwc,hwc->bc', x, p['pool/kernel']) if spec.pooling == 'depthwise' else x.mean(axis=(1, 2))
  if spec.normalize_features:
    pooled = pooled / np.sqrt(np.sum(pooled**2, axis=-1, keepdims=True) + FEATURE_EPS)
  return pooled @ p['logit/kernel'] + p['logit/bias']
