"""Identity image folders (root/<identity>/<image>) as a tensorflow-datasets builder.

The builder stores each image's original encoded bytes in array_record files
(no TensorFlow needed) and reads them back by random access through
`as_data_source`; decoding happens on the host at read time
(`fvjax.imageio.decode_face`). Every image is decoded once while preparing,
so a corrupt file stops the build with its path instead of being skipped.

Raw photos: with align='auto' (images that are not 112x112 are aligned) or
'always', each photo's largest face is aligned to an insightface crop while
preparing (`fvjax.align.read_face`) and stored as PNG; a photo without a face
stops the build with its path. align='never' scales and pads instead.
"""

import dataclasses
import hashlib
import io
import logging
import os
import sys
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from PIL import Image

from fvjax import align as align_lib, parallel
from fvjax.imageio import decode_face

IMAGE_SUFFIXES = frozenset({'.jpg', '.jpeg', '.png', '.pgm', '.ppm', '.bmp', '.gif', '.tif', '.tiff', '.webp'})
DEFAULT_CACHE = Path(os.environ.get('FVJAX_CACHE', Path.home() / '.cache' / 'fvjax'))


class FolderConfig(tfds.core.BuilderConfig):
  """The config of one identity folder: its name is a fingerprint of the listing (see `IdentityFolder`)."""


class _QuietFolderConfigs(logging.Filter):
  """Drops TFDS's 'Using custom data configuration' warning for folder configs: every folder is one, by design."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.args and isinstance(record.args[0], FolderConfig))


logging.getLogger('absl').addFilter(_QuietFolderConfigs())


def dataset_path(*parts: str) -> str:
  """A dataset under the data folder: $FVJAX_DATA_DIR (default /data) joined with `parts`."""
  return os.path.join(os.environ.get('FVJAX_DATA_DIR', '/data'), *parts)


class DatasetError(ValueError):
  """A dataset that is missing or malformed; the message names the path."""


def scan_identity_folder(root: str | os.PathLike) -> tuple[list[str], list[tuple[Path, int]]]:
  """Lists identities (sorted sub-folder names) and (image path, label) pairs.

  Raises:
    DatasetError: the root is missing, has no identity folders, or an identity folder has no images.
  """
  root = Path(root)
  if not root.is_dir():
    raise DatasetError(f'dataset path {root} does not exist or is not a directory')
  names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith('.'))
  if not names:
    raise DatasetError(f'{root} holds no identity folders (expected root/<identity>/<image>)')
  items = []
  for label, name in enumerate(names):
    files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
      raise DatasetError(f'identity folder {root / name} holds no images ({", ".join(sorted(IMAGE_SUFFIXES))})')
    items.extend((f, label) for f in files)
  return names, items


def _fingerprint(root: Path, items: list[tuple[Path, int]], align: str) -> str:
  digest = hashlib.sha256(str(root.resolve()).encode() + (b'' if align == 'never' else f'|align={align}'.encode()))
  for path, label in items:
    stat = path.stat()
    digest.update(f'{path.relative_to(root)}|{label}|{stat.st_size}|{stat.st_mtime_ns}\n'.encode())
  return f'{root.name or "root"}_{digest.hexdigest()[:16]}'.replace('-', '_').lower()


class IdentityFolder(tfds.core.GeneratorBasedBuilder):
  """TFDS builder over one identity folder; one split, 'images'.

  Features: image (encoded bytes: as on disk, or the aligned crop as PNG),
  label (ClassLabel of identity folder names), path (relative path, for error
  messages). The builder config name is a fingerprint of the listing and the
  align mode, so an edited folder is prepared anew.
  """
  VERSION = tfds.core.Version('1.0.0')

  def __init__(self, *, root: str | os.PathLike, align: str = 'never', **kwargs):
    if align not in align_lib.ALIGN_MODES:
      raise ValueError(f'unknown align mode {align!r}; expected one of {align_lib.ALIGN_MODES}')
    self._root = Path(root)
    self._align = align
    self._names, self._items = scan_identity_folder(self._root)
    config = FolderConfig(name=_fingerprint(self._root, self._items, align))
    super().__init__(config=config, file_format='array_record', **kwargs)

  def _log_download_bytes(self) -> None:  # TFDS would print "Downloading and preparing ..." on stdout
    print(f'preparing {self._root} ({len(self._items)} images, once) under {self.data_dir}', file=sys.stderr)

  def _log_download_done(self) -> None:
    pass

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=f'Identity image folder {self._root}',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=(), dtype=np.object_),
            'label': tfds.features.ClassLabel(names=self._names),
            'path': tfds.features.Tensor(shape=(), dtype=np.object_),
        }),
    )

  def _split_generators(self, dl_manager):
    return {'images': self._generate_examples()}

  def _generate_examples(self):
    for index, (path, label) in enumerate(self._items):
      if self._align == 'never':
        data = path.read_bytes()
        decode_face(data, source=str(path))  # fail loudly on corrupt files; never skip
      else:
        buffer = io.BytesIO()
        Image.fromarray(align_lib.read_face(path, self._align)).save(buffer, 'PNG')
        data = buffer.getvalue()
      yield index, {'image': data, 'label': label, 'path': str(path.relative_to(self._root))}


@dataclasses.dataclass
class FaceDataset:
  """Random-access face images with identity labels.

  source[i] -> {'image': encoded bytes, 'label': int, ...}; labels: int [N]; names: identity names [K].
  """
  source: object
  labels: np.ndarray
  names: list[str]

  def __len__(self) -> int:
    return len(self.labels)

  def decode(self, i: int) -> np.ndarray:
    """Image i as uint8 [112, 112, 3] (`imageio.decode_face`: a corrupt one raises naming it)."""
    return decode_face(self.source[int(i)]['image'], source=f'image #{i}')


def load_identity_folder(root: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                         align: str = 'never') -> FaceDataset:
  """Prepares (once; cached under `cache_dir`/tfds) and opens an identity folder (align: see the module doc)."""
  tfds.disable_progress_bar()
  def prepared_builder() -> IdentityFolder:  # made after the build, so that it reads the finished dataset
    builder = IdentityFolder(root=root, align=align, data_dir=str(Path(cache_dir or DEFAULT_CACHE) / 'tfds'))
    builder.download_and_prepare()
    _remove_empty_folders(Path(builder.data_dir_root) / 'downloads')  # TFDS makes them; a folder downloads nothing
    return builder

  builder = parallel.first_host_first(prepared_builder, f'dataset {root}')
  source = builder.as_data_source('images')
  labels = np.asarray([source[i]['label'] for i in range(len(source))], dtype=np.int32)
  return FaceDataset(source=source, labels=labels, names=builder.info.features['label'].names)


def _remove_empty_folders(root: Path) -> None:
  """Deletes `root` and the folders under it that hold no file (deepest first)."""
  if root.is_dir():
    for folder in sorted((p for p in root.rglob('*') if p.is_dir()), key=lambda p: -len(p.parts)) + [root]:
      if not any(folder.iterdir()):
        folder.rmdir()


def split_identities(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Splits image indices by identity: no identity appears in both halves.

  Returns (train_indices, test_indices), each sorted.
  """
  identities = np.unique(labels)
  rng = np.random.default_rng(seed)
  n_test = int(round(len(identities) * test_fraction))
  if not 0 < n_test < len(identities):
    raise ValueError(f'test_fraction={test_fraction} leaves no identities on one side of {len(identities)}')
  test_ids = rng.permutation(identities)[:n_test]
  is_test = np.isin(labels, test_ids)
  return np.flatnonzero(~is_test), np.flatnonzero(is_test)
