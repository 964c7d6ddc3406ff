"""Frozen-backbone features of a whole training set, computed once, streamed from disk.

The hypernetwork and FaceCoresetNet both train on top of a frozen backbone, so
its raw features of every image (and of its mirror) are computed in one pass
and stored as `features.npy`, beside a trained backbone's run or under
FVJAX_CACHE for a pretrained one (`FrozenBackbone.features_dir`). The file is
memory-mapped: training reads only the rows of each batch, so a set the size of
MS1MV2 (5.8M images: 24 GB of float32 features) never has to fit in host memory.
It is written under a temporary name and renamed when complete, with a key
(backbone, its step, data path, image count) that invalidates it when the backbone
or the data change; a half-written file is never read. `degraded_features` caches
the features of seeded, strongly degraded copies of the same images the same way
(mixed-quality templates, the learned quality head), `augmented_features` those of
seeded training-augmented copies of the training images alone (the distillation targets of augmented probes),
optionally blended with other training images (`Mixup`).
"""

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable

import jax
import numpy as np
from tqdm import tqdm

from fvjax import backbones, data
from fvjax.data import degrade
from fvjax.eval import verification

DECODE_CHUNK = 4096  # images decoded (and held in host memory) at once


def backbone_features(backbone: backbones.FrozenBackbone, split: backbones.DataSplit, progress: bool = False
                      ) -> tuple[np.ndarray, data.FaceDataset]:
  """(raw features [N, 2, C] of every image of the split's data and of its mirror (read-only memmap), the faces)."""
  return _cached_features(backbone, split, 'features', {}, lambda images, rows: (images, images[:, :, ::-1]),
                          progress)


def degraded_features(backbone: backbones.FrozenBackbone, split: backbones.DataSplit, seed: int,
                      progress: bool = False) -> tuple[np.ndarray, data.FaceDataset]:
  """(raw features [N, 1, C] of every image under one random strong degradation (read-only memmap), the faces).

  Image i is damaged by `degrade.random_degradation` with `np.random.default_rng([seed, i])`: blur, low
  resolution, occlusion or JPEG (`degrade.MIXED_DEGRADATIONS`), the same for any chunking or host."""

  def degraded(images, rows):
    return (np.stack([degrade.random_degradation(image, np.random.default_rng([seed, row]))
                      for image, row in zip(images, rows)]),)

  names = [(d.name, d.strengths) for d in degrade.MIXED_DEGRADATIONS]
  return _cached_features(backbone, split, f'degraded_{seed}', {'degradations': names}, degraded, progress)


@dataclasses.dataclass(frozen=True)
class Mixup:
  """A partner image blended into each augmented copy, as in function matching (Beyer et al., CVPR 2022: the
  teacher's targets of mixed images): one of `rows`, decoded by `decode` (row -> uint8 [112, 112, 3]), weighted by
  a share drawn from U[0, max_share]; the copy keeps the rest."""
  max_share: float
  rows: np.ndarray
  decode: Callable[[int], np.ndarray]

  @classmethod
  def of(cls, faces: data.FaceDataset, rows: np.ndarray, max_share: float) -> 'Mixup':
    """Partners drawn from the images `rows` of `faces` (sorted and deduplicated, so any order names one Mixup)."""
    return cls(max_share, np.unique(np.asarray(rows, np.int64)), faces.decode)

  def key(self) -> dict:
    """What tells these partners apart in a cache key: the largest share and a digest of the rows."""
    return {'mixup': self.max_share, 'mixup_rows_sha1': hashlib.sha1(self.rows.tobytes()).hexdigest()}


def augmented_view(image: np.ndarray, row: int, view: int, seed: int, augmentation: data.AugmentConfig,
                   mixup: Mixup | None = None) -> np.ndarray:
  """View `view` of image `row` (uint8 [112, 112, 3] -> the same): `data.augment` seeded by (seed, row, view), then,
  with `mixup`, blended with a partner drawn by the same generator: the same image wherever and whenever it is
  made."""
  rng = np.random.default_rng([seed, row, view])
  copy = data.augment(image, rng, augmentation)
  if mixup is None:
    return copy
  partner = mixup.decode(int(mixup.rows[rng.integers(len(mixup.rows))]))
  share = rng.uniform(0.0, mixup.max_share)
  return np.rint((1.0 - share) * copy + share * partner).astype(np.uint8)


def augmented_features(backbone: backbones.FrozenBackbone, split: backbones.DataSplit,
                       augmentation: data.AugmentConfig, views: int, seed: int, rows: np.ndarray | None = None,
                       mixup: Mixup | None = None, progress: bool = False, row_offset: int = 0
                       ) -> tuple[np.ndarray, data.FaceDataset]:
  """(raw features [N, views, C] of `views` augmented copies of every image (`augmented_view`; read-only memmap),
  the faces). rows: the images copied (default: all); the other images' rows are NaN, so a target read from one
  poisons the loss instead of passing silently. mixup: partners blended into the copies (default: none).
  row_offset: where this data starts in a run's whole training data (`augmented_features_of_parts`); copy v of row r
  is `augmented_view(image, row_offset + r, v, ...)`, the view the run draws for its image row_offset + r."""

  def copies(images, image_rows):
    return tuple(np.stack([augmented_view(image, row_offset + row, view, seed, augmentation, mixup)
                           for image, row in zip(images, image_rows)]) for view in range(views))

  key = {'augmentation': dataclasses.asdict(augmentation), 'views': views, **(mixup.key() if mixup else {}),
         **({'row_offset': row_offset} if row_offset else {})}
  return _cached_features(backbone, split, f'augmented_{seed}', key, copies, progress, rows)


def augmented_features_of_parts(backbone: backbones.FrozenBackbone, splits: list[backbones.DataSplit],
                                augmentation: data.AugmentConfig, views: int, seed: int, rows: np.ndarray,
                                mixup: Mixup | None = None, progress: bool = False) -> np.ndarray:
  """`augmented_features` [N, views, C] of data made of several sources in turn (a run's main data, then each added
  folder of `fvjax.train.extra_people`; N their images in all): each part's copies of its images among `rows`
  (indices into the whole) are cached on their own, seeded by their row in the whole. One part stays the read-only
  memmap `augmented_features` returns (streamed, as for MS1MV2); several are joined in memory (added folders are
  evaluation-scale sets)."""
  parts, offset = [], 0
  for split in splits:
    size = len(data.load_faces(split.data_dir, align=split.align))
    mine = rows[(rows >= offset) & (rows < offset + size)] - offset
    if len(mine):
      parts.append(augmented_features(backbone, split, augmentation, views, seed, mine, mixup, progress, offset)[0])
    else:  # no image of this part is copied: NaN, as for every row outside `rows`
      parts.append(np.full((size, views, backbone.embedding_size), np.nan, np.float32))
    offset += size
  return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _cached_features(backbone: backbones.FrozenBackbone, split: backbones.DataSplit, name: str, extra_key: dict,
                     views, progress: bool, rows: np.ndarray | None = None) -> tuple[np.ndarray, data.FaceDataset]:
  """(raw features [N, V, C], the faces): the backbone on the V images `views(images, rows)` makes of each image
  of `rows` (default: all; the other rows are NaN), cached beside its key (the backbone, its step, the data,
  `extra_key`, a digest of `rows`) as `<name>.npy`, or `<name>_<digest of extra_key and rows>.npy` when either is
  given, so variants (another augmentation, another run's training images) keep a file each instead of evicting
  one another."""
  faces = data.load_faces(split.data_dir, align=split.align)
  folder = backbone.features_dir(split)
  variant = json.loads(json.dumps(extra_key))
  if rows is not None:
    rows = np.unique(np.asarray(rows, np.int64))
    variant['rows_sha1'] = hashlib.sha1(rows.tobytes()).hexdigest()
  if variant:
    name = f'{name}_{hashlib.sha1(json.dumps(variant, sort_keys=True).encode()).hexdigest()[:12]}'
  path, key_path = folder / f'{name}.npy', folder / f'{name}.key.json'
  key = {'backbone': backbone.source, 'backbone_step': backbone.step, 'data_dir': split.data_dir,
         'align': split.align, 'images': len(faces), **variant}
  if path.is_file() and key_path.is_file() and json.loads(key_path.read_text()) == key:
    return np.load(path, mmap_mode='r'), faces
  if not len(faces):
    raise data.DatasetError(f'{split.data_dir} holds no images')
  rows = np.arange(len(faces)) if rows is None else rows
  folder.mkdir(parents=True, exist_ok=True)
  partial = folder / f'{name}.{jax.process_index()}.partial.npy'
  out, bar = None, None
  for chunk_rows in chunked(rows, DECODE_CHUNK):
    chunk_views = views(data.decode_all(faces, chunk_rows), chunk_rows)
    bar = bar or tqdm(total=len(chunk_views) * len(rows), desc='backbone features', unit='img', disable=not progress)
    chunk = np.stack([verification.embed_images(backbone.features_fn, v, flip=False, normalize_output=False,
                                                on_batch=bar.update) for v in chunk_views], axis=1)
    if out is None:
      out = np.lib.format.open_memmap(partial, mode='w+', dtype=np.float32, shape=(len(faces), *chunk.shape[1:]))
      if len(rows) < len(faces):
        out[:] = np.nan
    out[chunk_rows] = chunk
  bar.close()
  out.flush()
  del out
  os.replace(partial, path)  # complete: only now does it replace an older file
  key_path.write_text(json.dumps(key))
  return np.load(path, mmap_mode='r'), faces


def embeddings(features: np.ndarray, rows: np.ndarray) -> np.ndarray:
  """The verification embeddings [n, C] of `rows`: image + mirror features summed, then L2-normalised
  (what `verification.embed_images(..., flip=True)` gives for the same images)."""
  return _unit(np.asarray(features[np.asarray(rows)], np.float32).sum(axis=1))


def view_embeddings(features: np.ndarray, rows: np.ndarray, views: np.ndarray) -> np.ndarray:
  """The L2-normalised features [n, C] of view views[i] of image rows[i] (features [N, V, C]: no mirror summed)."""
  return _unit(np.asarray(features[np.asarray(rows), np.asarray(views)], np.float32))


def _unit(vectors: np.ndarray) -> np.ndarray:
  """Rows of `vectors` [n, C] divided by their L2 norm (at least 1e-12)."""
  return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def mean_embedding(features: np.ndarray, rows: np.ndarray) -> np.ndarray:
  """The mean [C] of `embeddings(features, rows)`, streamed over the memmap in bounded memory."""
  total = sum(embeddings(features, chunk).sum(axis=0) for chunk in chunked(np.asarray(rows)))
  return (total / len(rows)).astype(np.float32)


def chunked(rows: np.ndarray, size: int = 1 << 16):
  """Consecutive slices of `rows` of at most `size` (to stream over a memmap in bounded memory)."""
  return (rows[start:start + size] for start in range(0, len(rows), size))
