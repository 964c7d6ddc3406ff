"""Template (set) verification: IJB-B/C 1:1 protocol, identity-folder templates, set pooling baselines.

A template is a set of face images of one identity; a template pair is
genuine or impostor. Every template becomes one descriptor (by FaceCoresetNet
or a pooling baseline) from the features of all its images at once (no media
pooling, no flip, as the FaceCoresetNet evaluation), and a pair's score is the
cosine of its two descriptors. Reported: TAR at FAR in 1e-6..1e-1 (the ROC
point with the largest FAR not above each target), AUC and 10-fold accuracy.
"""

import dataclasses
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from fvjax import align, imageio
from fvjax.eval import verification
from fvjax.models import coreset, quality

# descriptor_fn(features [B, T, C], mask [B, T]) -> L2-normalised descriptors [B, C]
DescriptorFn = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class TemplateProtocol:
  """Templates over rows of a feature matrix and the template pairs to verify.

  members: one int array of feature rows per template; pairs [P, 2] template
  indices; issame [P] bool.
  """
  members: tuple[np.ndarray, ...]
  pairs: np.ndarray
  issame: np.ndarray

  def __post_init__(self):
    if not self.members:
      raise ValueError('a template protocol needs at least one template')
    empty = [i for i, m in enumerate(self.members) if len(m) == 0]
    if empty:
      raise ValueError(f'templates {empty[:10]} have no images')
    if self.pairs.ndim != 2 or self.pairs.shape[1] != 2 or len(self.pairs) != len(self.issame):
      raise ValueError(f'pairs must be [P, 2] with P labels; got {self.pairs.shape} and {self.issame.shape}')


def identity_templates(labels: np.ndarray, templates_per_identity: int, size_range: tuple[int, int],
                       seed: int) -> TemplateProtocol:
  """Random disjoint templates per identity from labelled images, and every template pair.

  Each identity's images are shuffled and cut into up to `templates_per_identity`
  templates of sizes drawn uniformly from [lo, hi] (the last ones smaller if
  images run out; identities with fewer than 2 images give no genuine pair).
  Pairs: all genuine pairs (same identity) and all impostor pairs.
  """
  lo, hi = size_range
  if not 1 <= lo <= hi:
    raise ValueError(f'template sizes must satisfy 1 <= lo <= hi, got {size_range}')
  rng = np.random.default_rng(seed)
  members, owner = [], []
  for identity in np.unique(labels):
    images = rng.permutation(np.flatnonzero(labels == identity))
    start = 0
    for _ in range(templates_per_identity):
      if start >= len(images):
        break
      size = int(rng.integers(lo, hi + 1))
      members.append(images[start:start + size])
      owner.append(identity)
      start += size
  return _every_pair(members, owner)


def _every_pair(members: list[np.ndarray], owner: list[int]) -> TemplateProtocol:
  """The templates `members` of identities `owner` and every template pair (genuine when the owners agree)."""
  owner = np.asarray(owner)
  i, j = np.triu_indices(len(members), k=1)
  return TemplateProtocol(tuple(members), np.stack([i, j], axis=1), owner[i] == owner[j])


def frontal_profile_templates(labels: np.ndarray, profile: np.ndarray, size: int, seed: int
                              ) -> tuple[TemplateProtocol, TemplateProtocol]:
  """(frontal, mixed) protocols over the same template pairs: two disjoint templates of `size` random frontal faces
  per identity, and the same templates with their last size // 2 members swapped for profile faces of that person
  (disjoint too). labels [N], profile bool [N] (CFP: 10 frontal and 4 profile faces per person). Raises ValueError
  naming an identity with too few faces of either kind."""
  rng = np.random.default_rng(seed)
  half, frontal, mixed, owner = size // 2, [], [], []
  for identity in np.unique(labels):
    frontals = rng.permutation(np.flatnonzero((labels == identity) & ~profile))
    profiles = rng.permutation(np.flatnonzero((labels == identity) & profile))
    if len(frontals) < 2 * size or len(profiles) < 2 * half:
      raise ValueError(f'identity {identity} has {len(frontals)} frontal and {len(profiles)} profile faces; two '
                       f'templates of {size} need {2 * size} and {2 * half}')
    for t in range(2):
      faces = frontals[t * size:(t + 1) * size]
      frontal.append(faces)
      mixed.append(np.concatenate([faces[:size - half], profiles[t * half:(t + 1) * half]]))
      owner.append(identity)
  return _every_pair(frontal, owner), _every_pair(mixed, owner)


def mixed_quality(protocol: TemplateProtocol, share: float, offset: int, seed: int) -> TemplateProtocol:
  """The protocol with floor(share * size + 1/2) members of each template, drawn at random (seeded per template),
  moved to their degraded copy: row r becomes r + offset (features stacked as [clean rows; degraded rows])."""
  members = []
  for i, rows in enumerate(protocol.members):
    rng = np.random.default_rng([seed, i])
    moved = rng.permutation(len(rows))[:int(np.floor(share * len(rows) + 0.5))]
    rows = np.array(rows)
    rows[moved] += offset
    members.append(rows)
  return dataclasses.replace(protocol, members=tuple(members))


def read_ijb(meta_dir: str | Path, name: str) -> tuple[np.ndarray, np.ndarray, TemplateProtocol]:
  """IJB-B/IJB-C 1:1 metadata in the insightface layout.

  meta_dir holds `{name}_face_tid_mid.txt` (lines: image_name template_id media_id)
  and `{name}_template_pair_label.txt` (lines: template_id template_id label).
  Returns (image names [N], media ids [N], protocol over those N images).
  """
  meta_dir = Path(meta_dir)
  faces_file = meta_dir / f'{name.lower()}_face_tid_mid.txt'
  pairs_file = meta_dir / f'{name.lower()}_template_pair_label.txt'
  for path in (faces_file, pairs_file):
    if not path.is_file():
      raise FileNotFoundError(f'IJB metadata {path} not found (expected the insightface IJB meta layout)')
  faces = _read_columns(faces_file, 3)
  pairs = _read_columns(pairs_file, 3)
  names = faces[:, 0]
  template_ids, media_ids = faces[:, 1].astype(np.int64), faces[:, 2].astype(np.int64)
  ids, index = np.unique(template_ids, return_inverse=True)
  members = tuple(np.flatnonzero(index == i) for i in range(len(ids)))
  pair_ids = pairs[:, :2].astype(np.int64)
  unknown = np.setdiff1d(pair_ids, ids)
  if unknown.size:
    raise ValueError(f'{pairs_file} names templates absent from {faces_file}: {unknown[:10].tolist()}')
  protocol = TemplateProtocol(members, np.searchsorted(ids, pair_ids), pairs[:, 2].astype(np.int64) == 1)
  return names, media_ids, protocol


@dataclasses.dataclass(frozen=True)
class IJBFaces:
  """The IJB loose crops and their 5 landmarks, in insightface's layout (`{ijb_dir}/loose_crop/NAME` and
  `{ijb_dir}/meta/{name}_name_5pts_score.txt`, lines: NAME x1 y1 ... x5 y5 faceness). Row i is the face of row i
  of `{name}_face_tid_mid.txt`, as insightface's evaluation reads them."""
  crop_dir: Path
  names: np.ndarray  # [N] file names
  landmarks: np.ndarray  # float [N, 5, 2]: left eye, right eye, nose, left and right mouth corners
  faceness: np.ndarray  # float [N]: the detector's score

  @classmethod
  def read(cls, ijb_dir: str | Path, name: str) -> 'IJBFaces':
    ijb_dir = Path(ijb_dir)
    path = ijb_dir / 'meta' / f'{name.lower()}_name_5pts_score.txt'
    if not path.is_file():
      raise FileNotFoundError(f'IJB landmarks {path} not found (expected the insightface IJB layout)')
    rows = _read_columns(path, 12)
    return cls(ijb_dir / 'loose_crop', rows[:, 0], rows[:, 1:11].astype(np.float64).reshape(-1, 5, 2),
               rows[:, 11].astype(np.float64))

  def __len__(self) -> int:
    return len(self.names)

  def aligned(self, rows) -> np.ndarray:
    """uint8 [len(rows), 112, 112, 3]: each loose crop aligned from its landmarks to the insightface template."""
    faces = []
    for i in rows:
      path = self.crop_dir / self.names[i]
      if not path.is_file():
        raise FileNotFoundError(f'IJB image {path} (line {i + 1} of the landmarks file) not found')
      faces.append(align.crop_from_landmarks(imageio.decode_image(path.read_bytes(), source=str(path)),
                                             self.landmarks[i]))
    return np.stack(faces)


def _read_columns(path: Path, columns: int) -> np.ndarray:
  rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
  bad = [i + 1 for i, r in enumerate(rows) if len(r) != columns]
  if bad:
    raise ValueError(f'{path}: lines {bad[:5]} do not have {columns} columns')
  if not rows:
    raise ValueError(f'{path} is empty')
  return np.asarray(rows)


def padded_sets(features: np.ndarray, members: list[np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray]:
  """(sets [B, size, C], mask [B, size]) of the given templates, zero-padded."""
  sets = np.zeros((len(members), size, features.shape[1]), features.dtype)
  mask = np.zeros((len(members), size), bool)
  for i, rows in enumerate(members):
    sets[i, :len(rows)] = features[rows]
    mask[i, :len(rows)] = True
  return sets, mask


def template_descriptors(descriptor_fn: DescriptorFn, features: np.ndarray, members, batch_size: int = 64) -> np.ndarray:
  """[num_templates, C] descriptors; templates are batched by size, padded to the next power of two
  (so a descriptor_fn under jit compiles once per size bucket), and checked with `coreset.check_sets`."""
  features = np.asarray(features, np.float32)
  sizes = np.array([len(m) for m in members])
  buckets = 2**np.ceil(np.log2(np.maximum(sizes, 1))).astype(int)
  out = np.zeros((len(members), features.shape[1]), np.float32)
  for bucket in np.unique(buckets):
    which = np.flatnonzero(buckets == bucket)
    for start in range(0, len(which), batch_size):
      rows = which[start:start + batch_size]
      sets, mask = padded_sets(features, [members[r] for r in rows], int(bucket))
      coreset.check_sets(sets, mask)
      n = len(rows)
      sets = np.pad(sets, ((0, batch_size - n), (0, 0), (0, 0)))
      mask = np.pad(mask, ((0, batch_size - n), (0, 0)), constant_values=True)  # padding sets: all-ones mask
      sets[n:] = 1.0
      out[rows] = np.asarray(descriptor_fn(jnp.asarray(sets), jnp.asarray(mask)))[:n]
  return out


def evaluate_templates(descriptor_fn: DescriptorFn, features: np.ndarray, protocol: TemplateProtocol,
                       fars=verification.DEFAULT_FARS, tar_method: str = 'conservative') -> dict:
  """Verification report (TAR@FAR, AUC, accuracy) of the protocol's template pairs under `descriptor_fn`;
  tar_method 'insightface' reads TAR@FAR as insightface's IJB evaluation (see `verification.tar_at_far`)."""
  d = template_descriptors(descriptor_fn, features, protocol.members)
  scores = np.sum(d[protocol.pairs[:, 0]] * d[protocol.pairs[:, 1]], axis=1)
  return verification.verification_report(scores, protocol.issame, fars=fars, tar_method=tar_method)


def pooling_baselines() -> dict[str, DescriptorFn]:
  """The baselines every set evaluation reports beside the aggregator."""
  return {'mean_pooling': jax.jit(coreset.mean_pool), 'norm_weighted_pooling': jax.jit(coreset.norm_weighted_pool)}


def quality_weighted_fn(head: quality.QualityHead, params) -> DescriptorFn:
  """Norm-weighted pooling with a learned quality as each member's norm (`quality.with_quality`), jitted."""
  return jax.jit(lambda x, m: coreset.norm_weighted_pool(quality.with_quality(x, head.apply({'params': params}, x)),
                                                         m))


def coreset_descriptor_fn(model: coreset.CoresetAggregator, params) -> DescriptorFn:
  """Inference descriptors of a trained aggregator (exact argmax picks, no dropout), jitted."""
  return jax.jit(lambda x, m: model.apply({'params': params}, x, m).descriptor)
