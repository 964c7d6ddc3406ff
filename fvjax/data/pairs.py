"""Verification pair sets: LFW's `pairs.txt` over an image folder, CFP-style pair files, and insightface `.bin`
files, read alike.

LFW's standard View 2 protocol (`pairs.txt`): a header `<folds> <n>`, then per fold n genuine pairs `name i j` and
n impostor pairs `name1 i name2 j`; image i of `name` is `name/name_000i.jpg` (4 digits). Pairs come out in file
order, so `verification.kfold_accuracy`'s contiguous folds are LFW's own ten folds.

A pair file (CFP's CFP-FF and CFP-FP protocols, `pairs_FF.txt`, `pairs_FP.txt`): one pair a line,
`fold path1 path2 same` with paths relative to the file's folder and same 1 or 0. Its folds must be contiguous and of
equal size in the file (as CFP's are), so the contiguous folds of `kfold_accuracy` are the official ones.
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


def read_pair_file(path: str | os.PathLike) -> tuple[list[bytes], np.ndarray]:
  """A `fold path1 path2 same` pair file -> (encoded images [2P], pair i = images 2i and 2i+1; issame bool [P]).

  Raises:
    DatasetError: naming the file and line of a malformed line, folds out of order or of unequal size, or a
    missing image.
  """
  path = Path(path)
  folds, paths, issame = [], [], []
  for number, line in enumerate(path.read_text().splitlines(), start=1):
    fields = line.split()
    if not fields:
      continue
    if len(fields) != 4 or not fields[0].isdigit() or fields[3] not in ('0', '1'):
      raise DatasetError(f'{path}:{number}: expected "fold path1 path2 same" (same 0 or 1), got {line.strip()!r}')
    folds.append(int(fields[0]))
    paths += [path.parent / fields[1], path.parent / fields[2]]
    issame.append(fields[3] == '1')
  if not folds:
    raise DatasetError(f'{path} holds no pairs')
  order, sizes = np.unique(folds, return_counts=True)
  if list(np.repeat(order, sizes)) != folds or len(set(sizes)) != 1:
    raise DatasetError(f'{path}: the folds must come in ascending order, contiguous and of equal size (found sizes {sizes.tolist()})')
  missing = [p for p in paths if not p.is_file()]
  if missing:
    raise DatasetError(f'{path} names {len(missing)} images that do not exist, e.g. {missing[0]}')
  return [p.read_bytes() for p in paths], np.asarray(issame)


def read_pairs(path: str | os.PathLike) -> tuple[list[bytes], np.ndarray]:
  """A verification pair set: an LFW-layout folder (with `pairs.txt`), a `.txt` pair file (`read_pair_file`), or an
  insightface `.bin` file."""
  path = Path(path)
  if path.is_dir():
    return read_lfw(path)
  return read_pair_file(path) if path.suffix == '.txt' else read_bin(path)


def read_pair_images(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
  """`read_pairs` decoded: (uint8 faces [2P, 112, 112, 3], pair i = rows 2i and 2i+1; issame bool [P])."""
  encoded, issame = read_pairs(path)
  return np.stack([decode_face(b, source=f'{path}#{i}') for i, b in enumerate(encoded)]), issame
