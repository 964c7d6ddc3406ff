"""Pretrained face recognisers that ship inside the package: offline, no download.

```python
from fvjax import pretrained
model = pretrained.load('dlib_resnet')   # the module, its variables, its input convention
emb = model.embed(images)                # uint8 [N, 112, 112, 3] RGB insightface-aligned crops -> float32 [N, 128]
```

`dlib_resnet`: dlib's ResNet face recogniser (`dlib_face_recognition_resnet_model_v1`, Davis King), weights as
converted by face-api.js (`@vladmandic/face-api` 1.7.15, MIT; files, licence and provenance in
`fvjax/pretrained/dlib_resnet/`). Its input is dlib's 150x150 face chip; `embed` maps insightface crops onto that
chip with the fixed similarity transform of `fvjax.align` (geometry 'align'); geometry 'resize' scales the crop to
150x150 instead, which loses about 14 points of pair accuracy and exists to show why alignment matters.
"""

import dataclasses
import functools
import json
from pathlib import Path
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fvjax import align
from fvjax.eval import verification
from fvjax.models import dlib_resnet

WEIGHTS_DIR = Path(__file__).parent
PREFIX = 'pretrained:'  # how configs and the CLI name a pretrained backbone: 'pretrained:dlib_resnet'
GEOMETRIES = ('align', 'resize')


@dataclasses.dataclass(frozen=True)
class PretrainedBackbone:
  """A frozen recogniser and how to feed it.

  features_fn maps what every fvjax backbone takes, normalised insightface crops (x / 255 - 0.5) / 0.5
  [B, 112, 112, 3], to raw (unnormalised) descriptors [B, embedding_size], so the pretrained model drops in
  wherever a trained backbone does (verification, features for the hypernetwork and FaceCoresetNet).
  """
  name: str
  module: nn.Module
  variables: dict
  geometry: str
  input_shape: tuple[int, int, int]  # the network's own input, one image
  embedding_size: int
  input_convention: str

  @functools.cached_property
  def features_fn(self) -> Callable[[np.ndarray], jax.Array]:
    if self.geometry == 'align':
      to_chip = align.insightface_to_dlib_chip()
    else:
      to_chip = lambda x: jax.image.resize(x, (*x.shape[:-3], *dlib_resnet.INPUT_SHAPE), 'linear')

    def apply(variables, normalized_crops):
      pixels = (normalized_crops * 0.5 + 0.5) * 255.0
      return self.module.apply(variables, dlib_resnet.preprocess(to_chip(pixels)))

    return verification.jit_embed(functools.partial(apply, self.variables))

  def embed(self, images: np.ndarray, flip: bool = False, batch_size: int = 64) -> np.ndarray:
    """uint8 [N, 112, 112, 3] RGB insightface-aligned crops -> float32 [N, embedding_size] unit rows.

    flip: average with the mirrored crop's descriptor (the usual test-time augmentation). Jitted, in batches of
    `batch_size` split over the local devices. Raises ValueError on another shape or dtype.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (align.CROP_SIZE, align.CROP_SIZE, 3):
      raise ValueError(f'{self.name}.embed takes uint8 [N, {align.CROP_SIZE}, {align.CROP_SIZE}, 3] RGB '
                       f'insightface-aligned crops; got {images.dtype} {list(images.shape)}')
    return verification.embed_images(self.features_fn, images, batch_size, flip=flip).astype(np.float32)


def read_face_api_weights(manifest_path: Path) -> dict[str, np.ndarray]:
  """Tensors {name: float32 array} of a face-api.js weights manifest and the binary files it names.

  The binaries are the tensors' values concatenated in manifest order: uint8 (value = byte * scale + min) where a
  tensor has a `quantization` entry, little-endian float32 where it has none.
  """
  manifest = json.loads(manifest_path.read_text())
  tensors = {}
  for group in manifest:
    buffer = b''.join((manifest_path.parent / name).read_bytes() for name in group['paths'])
    offset = 0
    for entry in group['weights']:
      count = int(np.prod(entry['shape']))
      quantization = entry.get('quantization')
      if quantization:
        if quantization['dtype'] != 'uint8':
          raise ValueError(f"{manifest_path}: tensor {entry['name']} is quantized as {quantization['dtype']}; "
                           'only uint8 is supported')
        raw = np.frombuffer(buffer, np.uint8, count, offset)
        values = raw.astype(np.float32) * np.float32(quantization['scale']) + np.float32(quantization['min'])
        offset += count
      else:
        values = np.frombuffer(buffer, '<f4', count, offset).astype(np.float32)
        offset += 4 * count
      tensors[entry['name']] = values.reshape(entry['shape'])
    if offset != len(buffer):
      raise ValueError(f'{manifest_path}: the manifest accounts for {offset:,} bytes of {len(buffer):,}')
  return tensors


def _dlib_resnet(geometry: str) -> PretrainedBackbone:
  tensors = read_face_api_weights(WEIGHTS_DIR / 'dlib_resnet' / 'face_recognition_model-weights_manifest.json')
  params = jax.tree.map(jnp.asarray, dlib_resnet.params_from_face_api(tensors))
  return PretrainedBackbone(
      name='dlib_resnet', module=dlib_resnet.DlibResNet(), variables={'params': params}, geometry=geometry,
      input_shape=dlib_resnet.INPUT_SHAPE, embedding_size=dlib_resnet.EMBEDDING_SIZE,
      input_convention=('150x150 RGB dlib face chip, (pixel - mean RGB (122.782, 117.001, 104.298)) / 256; '
                        'embed() and features_fn take insightface-aligned 112x112 crops and map them onto the chip '
                        f"({'fixed similarity transform' if geometry == 'align' else 'plain resize'})"))


_LOADERS = {'dlib_resnet': _dlib_resnet}


def available() -> tuple[str, ...]:
  """Names `load` accepts."""
  return tuple(_LOADERS)


def load(name: str, geometry: str = 'align') -> PretrainedBackbone:
  """The pretrained backbone `name` (one of `available()`), read from the files inside the package.

  geometry: 'align' (insightface crop -> the network's own chip by a fixed similarity transform) or 'resize'.
  """
  if name.startswith(PREFIX):
    name = name[len(PREFIX):]
  if name not in _LOADERS:
    raise ValueError(f'unknown pretrained model {name!r}; available: {", ".join(available())}')
  if geometry not in GEOMETRIES:
    raise ValueError(f'unknown geometry {geometry!r}; expected one of {GEOMETRIES}')
  return _load(name, geometry)


@functools.cache
def _load(name: str, geometry: str) -> PretrainedBackbone:
  return _LOADERS[name](geometry)


def is_pretrained(backbone: str) -> bool:
  """Whether a config's backbone string names a pretrained model ('pretrained:NAME') rather than a workdir."""
  return str(backbone).startswith(PREFIX)
