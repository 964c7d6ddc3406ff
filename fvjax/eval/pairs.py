"""A backbone's pair-verification report on the two kinds of pair sets: a file of pairs (LFW's `pairs.txt`
folder, CFP's `fold path1 path2 same` file, an insightface `.bin`) and random pairs of an identity folder's held-out
identities.

`evaluate` is `fvjax eval`: any backbone (`fvjax.backbones`: a trained workdir or 'pretrained:NAME') on any of
them, in one table.
"""

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from fvjax import backbones, data
from fvjax.eval import verification


def pair_set_report(path: str | os.PathLike, embed_fn: Callable, flip: bool = True) -> dict:
  """`verification_report` of embedding cosines on a pair set (`data.read_pairs`: an LFW folder, a CFP-style `.txt`
  or a `.bin`)."""
  images, issame = data.read_pair_images(path)
  return consecutive_pairs_report(verification.embed_images(embed_fn, images, flip=flip), issame)


def consecutive_pairs_report(embeddings: np.ndarray, issame: np.ndarray) -> dict:
  """`verification_report` of the cosines of pairs (2i, 2i + 1) of embeddings [2P, E]."""
  pairs = np.arange(len(embeddings)).reshape(-1, 2)
  return verification.verification_report(verification.pair_scores(embeddings, pairs), issame)


def pair_set_embeddings(backbone: backbones.FrozenBackbone, path, images: np.ndarray, flip: bool = True
                        ) -> np.ndarray:
  """The L2 embeddings [2P, C] (flip-averaged with `flip`) of a pair set's decoded faces [2P, 112, 112, 3]
  (`data.read_pair_images`), cached under FVJAX_CACHE by (backbone, its step, flip, the set's resolved path, size
  and modification time), so that every run evaluating LFW or CFP on one backbone embeds it once."""
  stat = Path(path).stat()
  key = json.dumps([backbone.source, backbone.step, flip, str(Path(path).resolve()), stat.st_size,
                    stat.st_mtime_ns])
  cached = data.folder.DEFAULT_CACHE / 'pair_embeddings' / f'{hashlib.sha256(key.encode()).hexdigest()[:24]}.npy'
  if cached.is_file():
    embeddings = np.load(cached)
    if len(embeddings) == len(images):
      return embeddings
  embeddings = verification.embed_images(backbone.features_fn, images, flip=flip)
  cached.parent.mkdir(parents=True, exist_ok=True)
  partial = cached.with_suffix(f'.{os.getpid()}.partial.npy')
  np.save(partial, embeddings)
  os.replace(partial, cached)  # complete: a half-written file is never read
  return embeddings


def held_out_report(faces: data.FaceDataset, test_idx: np.ndarray, embed_fn: Callable, num_pairs: int, seed: int,
                    flip: bool = True) -> dict:
  """`labelled_images_report` of the images `test_idx` of `faces`."""
  return labelled_images_report(data.decode_all(faces, test_idx), faces.labels[test_idx], embed_fn, num_pairs, seed,
                                flip)


def labelled_images_report(images: np.ndarray, labels: np.ndarray, embed_fn: Callable, num_pairs: int, seed: int,
                           flip: bool = True) -> dict:
  """`verification_report` of embedding cosines on `num_pairs` balanced random pairs (`make_pairs` with `seed`)
  among uint8 images [N, 112, 112, 3] of identities `labels` [N]."""
  embeddings = verification.embed_images(embed_fn, images, flip=flip)
  pairs, issame = verification.make_pairs(labels, num_pairs, seed)
  return verification.verification_report(verification.pair_scores(embeddings, pairs), issame)


def report_name(path: str | os.PathLike) -> str:
  """A pair set's name in reports: the `.bin` file's stem or the folder's name."""
  return Path(path).stem


def is_pair_file(path: str | os.PathLike) -> bool:
  """A `.bin` file, a CFP-style `.txt` pair file or an LFW-layout folder (with pairs.txt), as opposed to an
  identity folder."""
  path = Path(path)
  return path.suffix in ('.bin', '.txt') or (path / 'pairs.txt').is_file()


def evaluate(backbone: backbones.FrozenBackbone, paths: list[str], flip: bool = True, num_pairs: int = 3000,
             test_fraction: float = 0.25, split_seed: int = 0, align: str = 'auto') -> dict[str, dict]:
  """{pair set name: report} of `backbone` on each path: a pair file, or an identity folder, whose held-out
  identities give `num_pairs` random pairs (seeded by `split_seed`, as `fvjax train` draws them). For an identity
  folder a trained backbone was trained on, its own split is used, so the pairs are the ones its run reported;
  otherwise `test_fraction` of the identities, split by `split_seed` (the CelebA experiments' defaults), their
  images made crops by `align` (see `fvjax.data.folder`)."""
  reports = {}
  for path in paths:
    if is_pair_file(path):
      images, issame = data.read_pair_images(path)
      reports[report_name(path)] = consecutive_pairs_report(pair_set_embeddings(backbone, path, images, flip), issame)
      continue
    split, pairs_drawn = backbones.DataSplit(str(path), test_fraction, split_seed, align), num_pairs
    run = backbone.run_config
    if run is not None and Path(run.data_dir).resolve() == Path(path).resolve():
      split = backbones.DataSplit(str(path), float(run.test_fraction), int(run.split_seed), run.get('align', 'never'))
      pairs_drawn = int(run.eval_pairs)
    faces = data.load_faces(split.data_dir, align=split.align)
    _, test_idx = data.split_identities(faces.labels, split.test_fraction, split.split_seed)
    reports[f'{report_name(path)}_held_out'] = held_out_report(faces, test_idx, backbone.features_fn, pairs_drawn,
                                                               split.split_seed, flip)
  return reports
