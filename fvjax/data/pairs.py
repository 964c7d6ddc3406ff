"""Verification pair sets: LFW's `pairs.txt` over an image folder, and insightface `.bin` files, read alike.

LFW's standard View 2 protocol (`pairs.txt`): a header `<folds> <n>`, then per fold n genuine pairs `name i j` and
n impostor pairs `name1 i name2 j`; image i of `name` is `name/name_000i.jpg` (4 digits). Pairs come out in file
order, so `verification.kfold_accuracy`'s contiguous folds are LFW's own ten folds.
"""

import os
from pathlib import Path

import numpy as np

from fvjax.data.folder import DatasetError
from fvjax.data.insightface import read_bin
from fvjax.imageio import decode_face


def read_lfw(root: str | os.PathLike, pairs_file: str = 'pairs.txt') -> tuple[list[bytes], np.ndarray]:
  """An LFW-layout folder -> (encoded images [2P], pair i = images 2i and 2i+1; issame bool [P]).

  Raises:
    DatasetError: naming the file or line when pairs.txt is missing or malformed, or an image is missing.
  """
  root = Path(root)
  listing = root / pairs_file
  if not listing.is_file():
    raise DatasetError(f'{root} is not an LFW-layout pair set: {listing} does not exist')
  lines = [line.split() for line in listing.read_text().splitlines() if line.strip()]
  try:
    folds, per_fold = (int(v) for v in lines[0])
  except ValueError as e:
    raise DatasetError(f'{listing}: the first line must be "<folds> <pairs per fold and class>"') from e
  if len(lines) - 1 != 2 * folds * per_fold:
    raise DatasetError(f'{listing}: {len(lines) - 1} pair lines, the header announces {2 * folds * per_fold}')
  image = lambda name, number: root / name / f'{name}_{int(number):04d}.jpg'
  paths, issame = [], []
  for number, fields in enumerate(lines[1:], start=2):
    if len(fields) == 3:
      paths += [image(fields[0], fields[1]), image(fields[0], fields[2])]
      issame.append(True)
    elif len(fields) == 4:
      paths += [image(fields[0], fields[1]), image(fields[2], fields[3])]
      issame.append(False)
    else:
      raise DatasetError(f'{listing}:{number}: expected "name i j" or "name1 i name2 j", got {" ".join(fields)!r}')
  missing = [p for p in paths if not p.is_file()]
  if missing:
    raise DatasetError(f'{listing} names {len(missing)} images that do not exist, e.g. {missing[0]}')
  return [p.read_bytes() for p in paths], np.asarray(issame)


def read_pairs(path: str | os.PathLike) -> tuple[list[bytes], np.ndarray]:
  """A verification pair set: an insightface `.bin` file or an LFW-layout folder (with `pairs.txt`)."""
  path = Path(path)
  return read_lfw(path) if path.is_dir() else read_bin(path)


def read_pair_images(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
  """`read_pairs` decoded: (uint8 faces [2P, 112, 112, 3], pair i = rows 2i and 2i+1; issame bool [P])."""
  encoded, issame = read_pairs(path)
  return np.stack([decode_face(b, source=f'{path}#{i}') for i, b in enumerate(encoded)]), issame
