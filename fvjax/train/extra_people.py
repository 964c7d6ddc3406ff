"""More training people for the generator: identity folders added to its training identities, never held out.

For identity-scaling runs (experiments/hyper_identities_lfw_celeba_pretrained_cpu.py): the people of another folder
(LFW's, say) join the training people of the main data; the main data's held-out and calibration people stay as they
are, so the held-out figures stay comparable, and the added set is never reported on (it is training data). A names
file (one name a line, optionally after an id number: CFP's `names.txt`) excludes people whose faces an evaluation
set holds; names match with spaces read as underscores (LFW's folder names).
"""

import dataclasses
from pathlib import Path

import numpy as np

from fvjax import backbones, data
from fvjax.train import features as features_lib


@dataclasses.dataclass(frozen=True)
class ConcatSource:
  """Random access over several data sources in turn: index i of the whole is index i - offset of its part."""
  parts: tuple

  def __len__(self) -> int:
    return sum(len(p) for p in self.parts)

  def __getitem__(self, i: int):
    for part in self.parts:
      if i < len(part):
        return part[i]
      i -= len(part)
    raise IndexError(i)


def excluded_names(path: str | Path) -> set[str]:
  """Names in a names file, spaces read as underscores: 'NNN First Last' or 'First Last' lines -> 'First_Last'."""
  names = set()
  for line in Path(path).read_text().splitlines():
    fields = line.split()
    if fields and fields[0].isdigit():
      fields = fields[1:]
    if fields:
      names.add('_'.join(fields))
  return names


def folder_split(folder: str | Path, align: str) -> backbones.DataSplit:
  """An added folder as data whose backbone features are cached: every image a training image, none held out."""
  return backbones.DataSplit(str(folder), 0.0, 0, align)


def add_people(backbone: backbones.FrozenBackbone, features: np.ndarray, faces: data.FaceDataset,
               folders: tuple[str, ...], align: str, exclude_file: str = '', progress: bool = False
               ) -> tuple[np.ndarray, data.FaceDataset, np.ndarray]:
  """(features [N + M, 2, C], faces of both, the M added image indices) with the people of `folders` appended.

  Their features are computed once and cached like the main data's (`features_lib.backbone_features`); the
  combined features are held in memory (the added folders are evaluation-scale sets, not MS1MV2). People named in
  `exclude_file` are left out; added labels follow the main data's, so no identity is shared by accident.
  """
  exclude = excluded_names(exclude_file) if exclude_file else set()
  all_features, sources, labels, names, added = [features], [faces.source], [faces.labels], list(faces.names), []
  offset = len(faces)
  for folder in folders:
    extra_features, extra = features_lib.backbone_features(backbone, folder_split(folder, align), progress)
    keep = ~np.isin(np.asarray(extra.names)[extra.labels], list(exclude))
    all_features.append(np.asarray(extra_features))
    sources.append(extra.source)
    labels.append(np.where(keep, extra.labels + len(names), -1))  # -1: excluded, never drawn
    added.append(offset + np.flatnonzero(keep))
    names += list(extra.names)
    offset += len(extra)
  combined = data.FaceDataset(source=ConcatSource(tuple(sources)), labels=np.concatenate(labels).astype(np.int32),
                              names=names)
  return np.concatenate(all_features), combined, np.concatenate(added)
