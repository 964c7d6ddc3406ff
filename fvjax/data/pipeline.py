"""Host input pipeline: decode + augment in threads (grain), prefetch onto devices.

The training stream is a `grain.MapDataset` indexed by step: batch `s` is a
pure function of (seed, s), reshuffled every epoch. Resuming at step s is
`train_batches(...)[s:]`: no iterator state to checkpoint, nothing skipped,
nothing repeated.
"""

import collections
import dataclasses
from typing import Iterable, Iterator

import grain
import jax
import numpy as np

from fvjax.data import degrade
from fvjax.data.folder import FaceDataset
from fvjax.parallel import host_to_global
from fvjax.imageio import FACE_SIZE, decode_face, normalize


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Training augmentation: horizontal flip with probability `flip`, a random
  crop of `crop_padding` pixels (reflect-pad then crop back to 112x112), and
  colour jitter: contrast about the image's mean by a factor drawn from
  U[1 - contrast, 1 + contrast], then brightness by one from
  U[1 - brightness, 1 + brightness] (0: off, and no random draw); with probability
  `low_resolution`, AdaFace's rescaling: down-sampled by a factor drawn from U[1, max_downscale]
  and back up (`fvjax.data.degrade.low_resolution`)."""
  flip: float = 0.5
  crop_padding: int = 0
  brightness: float = 0.0
  contrast: float = 0.0
  low_resolution: float = 0.0
  max_downscale: float = 5.0


class _Subset:
  """Random-access view of `dataset` restricted to `indices`, labels remapped to 0..K-1."""

  def __init__(self, dataset: FaceDataset, indices: np.ndarray):
    self._source = dataset.source
    self._indices = np.asarray(indices)
    if len(self._indices) == 0:
      raise ValueError('cannot build a training stream from zero images')
    classes, self.labels = np.unique(dataset.labels[self._indices], return_inverse=True)
    self.num_classes = len(classes)

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, i: int) -> dict:
    record = self._source[int(self._indices[i])]
    return {'image': record['image'], 'label': int(self.labels[i]), 'index': int(self._indices[i])}


def augment(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
  """uint8 [112, 112, 3] -> uint8 [112, 112, 3] with random crop, flip, then contrast and brightness."""
  if config.crop_padding:
    p = config.crop_padding
    padded = np.pad(image, ((p, p), (p, p), (0, 0)), mode='reflect')
    dy, dx = rng.integers(0, 2 * p + 1, size=2)
    image = padded[dy:dy + FACE_SIZE, dx:dx + FACE_SIZE]
  if rng.random() < config.flip:
    image = image[:, ::-1]
  if config.contrast or config.brightness:
    x = image.astype(np.float32)
    if config.contrast:
      mean = x.mean()
      x = (x - mean) * rng.uniform(1 - config.contrast, 1 + config.contrast) + mean
    if config.brightness:
      x = x * rng.uniform(1 - config.brightness, 1 + config.brightness)
    image = np.clip(np.rint(x), 0, 255).astype(np.uint8)
  if config.low_resolution and rng.random() < config.low_resolution:
    image = degrade.low_resolution(np.ascontiguousarray(image), rng.uniform(1.0, config.max_downscale))
  return np.ascontiguousarray(image)


def train_batches(dataset: FaceDataset, indices: np.ndarray, batch_size: int, seed: int,
                  augmentation: AugmentConfig = AugmentConfig()) -> tuple[grain.MapDataset, int]:
  """Endless, step-indexed training batches over the images `indices` of `dataset`.

  Returns (batches, num_classes): batches[s] = {'image': float32 [b, 112, 112, 3] in [-1, 1],
  'label': int32 [b] in 0..num_classes-1, 'index': int64 [b] dataset indices}, where
  b = batch_size / process_count is this host's share of the global batch `batch_size`. The hosts'
  shares of step s together are exactly the single-host batch s (augmentation included).
  """
  hosts = jax.process_count()
  if batch_size % hosts:
    raise ValueError(f'global batch {batch_size} does not split over {hosts} hosts')
  subset = _Subset(dataset, indices)

  def decode(record: dict, rng: np.random.Generator) -> dict:
    image = decode_face(record['image'], source=f'image #{record["index"]}')
    return {'image': normalize(augment(image, rng, augmentation)), 'label': np.int32(record['label']),
            'index': np.int64(record['index'])}

  batches = (grain.MapDataset.source(subset).shuffle(seed=seed).repeat()
             .random_map(decode, seed=seed)[jax.process_index()::hosts].batch(batch_size // hosts, drop_remainder=True))
  return batches, subset.num_classes


def iterate(batches: grain.MapDataset, start_step: int, num_threads: int = 4, prefetch: int = 8) -> Iterator[dict]:
  """Threaded host iterator over `batches[start_step:]` (decoding overlaps the device step)."""
  options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
  return iter(batches[start_step:].to_iter_dataset(options))


def prefetch_to_device(batches: Iterable[dict], sharding: jax.sharding.NamedSharding, size: int = 2) -> Iterator[dict]:
  """Keeps `size` global batches already transferred (asynchronously) to devices ahead of the consumer.

  Each host supplies its own rows; they are assembled into global arrays split by `sharding`.
  """
  queue = collections.deque()
  for batch in batches:
    queue.append(host_to_global(batch, sharding))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()


def decode_all(dataset: FaceDataset, indices: np.ndarray, num_threads: int = 4) -> np.ndarray:
  """Decodes the images `indices` into uint8 [N, 112, 112, 3] (for evaluation)."""
  ds = grain.MapDataset.source(_Subset(dataset, indices)).map(
      lambda r: decode_face(r['image'], source=f'image #{r["index"]}'))
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=16))
  return np.stack(list(it)) if len(indices) else np.zeros((0, FACE_SIZE, FACE_SIZE, 3), np.uint8)
