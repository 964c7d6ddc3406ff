"""Pair verification: 10-fold accuracy, ROC, TAR@FAR, flip test-time augmentation.

Scores are similarities (higher = more likely the same person); a pair is
declared 'same' when score >= threshold.
"""

import dataclasses
from typing import Callable

import jax
import numpy as np

from fvjax import parallel
from fvjax.imageio import normalize

DEFAULT_FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def best_threshold(scores: np.ndarray, issame: np.ndarray) -> float:
  """The accuracy-maximising threshold for deciding `score >= t` (the smallest, on ties), among every distinct
  decision: -inf, the midpoints between sorted unique scores, +inf. O(N log N): counted over the sorted scores, so
  millions of template pairs (IJB-scale) need no [thresholds x pairs] matrix."""
  unique, inverse = np.unique(scores, return_inverse=True)
  genuine = np.bincount(inverse, weights=issame, minlength=len(unique))
  impostor = np.bincount(inverse, weights=~issame, minlength=len(unique))
  # Decision k (0..U) accepts the scores unique[k:]: its genuine pairs accepted plus its impostors rejected.
  correct = genuine.sum() - np.r_[0.0, np.cumsum(genuine)] + np.r_[0.0, np.cumsum(impostor)]
  thresholds = np.concatenate([[-np.inf], (unique[:-1] + unique[1:]) / 2, [np.inf]])
  return float(thresholds[np.argmax(correct)])


@dataclasses.dataclass(frozen=True)
class KFoldResult:
  accuracy: float  # mean over folds
  std: float
  fold_accuracies: np.ndarray  # [F]
  thresholds: np.ndarray  # [F], chosen on the other F-1 folds


def kfold_accuracy(scores: np.ndarray, issame: np.ndarray, n_folds: int = 10) -> KFoldResult:
  """LFW-protocol accuracy: pairs split into `n_folds` contiguous folds (as insightface's
  unshuffled KFold); each fold is scored at the threshold that is best on the others."""
  scores, issame = np.asarray(scores, np.float64), np.asarray(issame, bool)
  if len(scores) < n_folds:
    raise ValueError(f'{len(scores)} pairs cannot be split into {n_folds} folds')
  folds = np.array_split(np.arange(len(scores)), n_folds)
  accs, thresholds = [], []
  for test in folds:
    train = np.setdiff1d(np.arange(len(scores)), test)
    t = best_threshold(scores[train], issame[train])
    thresholds.append(t)
    accs.append(float(np.mean((scores[test] >= t) == issame[test])))
  accs = np.asarray(accs)
  return KFoldResult(float(accs.mean()), float(accs.std()), accs, np.asarray(thresholds))


def roc_curve(scores: np.ndarray, issame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(far [T], tar [T], thresholds [T]) for every distinct threshold, FAR increasing."""
  scores, issame = np.asarray(scores, np.float64), np.asarray(issame, bool)
  if issame.all() or not issame.any():
    raise ValueError('a ROC needs both genuine and impostor pairs')
  order = np.argsort(-scores, kind='stable')
  s, y = scores[order], issame[order]
  last_of_run = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # accept every score >= s[i]
  tar = np.cumsum(y)[last_of_run] / y.sum()
  far = np.cumsum(~y)[last_of_run] / (~y).sum()
  return np.r_[0.0, far], np.r_[0.0, tar], np.r_[np.inf, s[last_of_run]]


TAR_METHODS = ('conservative', 'insightface')


def tar_at_far(scores: np.ndarray, issame: np.ndarray, fars=DEFAULT_FARS, method: str = 'conservative'
               ) -> dict[float, float]:
  """TAR at each target FAR.

  'conservative': the largest operating point whose FAR does not exceed the target; a target below
  1 / #impostors cannot be resolved and maps to NaN.
  'insightface': as insightface's IJB evaluation (and the tables that cite it): the ROC of
  sklearn.metrics.roc_curve (collinear points dropped), then the TAR of the point whose FAR is closest to the
  target (ties: the highest TAR), resolvable or not.
  """
  if method == 'conservative':
    far, tar, _ = roc_curve(scores, issame)
    n_impostor = int((~np.asarray(issame, bool)).sum())
    return {f: (float(tar[np.searchsorted(far, f, side='right') - 1]) if f * n_impostor >= 1 else float('nan'))
            for f in fars}
  if method != 'insightface':
    raise ValueError(f'unknown TAR@FAR method {method!r}; expected one of {TAR_METHODS}')
  issame = np.asarray(issame, bool)
  far, tar, _ = roc_curve(scores, issame)
  far, tar = far[1:], tar[1:]  # sklearn's points, then its own (0, 0) first
  false_accepts, true_accepts = np.rint(far * (~issame).sum()), np.rint(tar * issame.sum())  # exact counts
  corner = np.r_[True, np.logical_or(np.diff(false_accepts, 2) != 0, np.diff(true_accepts, 2) != 0), True]
  far, tar = np.r_[0.0, far[corner]], np.r_[0.0, tar[corner]]
  result = {}
  for f in fars:
    distance = np.abs(far - f)
    result[f] = float(tar[np.flatnonzero(distance == distance.min())[-1]])
  return result


def make_pairs(labels: np.ndarray, num_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Balanced random genuine / impostor pairs over images with `labels`.

  Returns (pairs int [P, 2] of image indices, issame bool [P]), genuine and
  impostor interleaved so every fold of `kfold_accuracy` is balanced.
  """
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  by_id = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
  multi = [c for c, idx in by_id.items() if len(idx) >= 2]
  if not multi or len(by_id) < 2:
    raise ValueError('pairs need an identity with 2+ images and at least 2 identities')
  ids = np.array(list(by_id))
  pairs, issame = [], []
  for i in range(num_pairs):
    if i % 2 == 0:
      c = multi[rng.integers(len(multi))]
      pairs.append(rng.choice(by_id[c], 2, replace=False))
      issame.append(True)
    else:
      a, b = rng.choice(ids, 2, replace=False)
      pairs.append([rng.choice(by_id[a]), rng.choice(by_id[b])])
      issame.append(False)
  return np.asarray(pairs, np.int64), np.asarray(issame)


def embed_images(embed_fn: Callable[[jax.Array], jax.Array], images: np.ndarray, batch_size: int = 64,
                 flip: bool = True, normalize_output: bool = True,
                 on_batch: Callable[[int], object] | None = None) -> np.ndarray:
  """Embeddings [N, E] of uint8 images [N, 112, 112, 3], L2-normalised unless `normalize_output` is False
  (raw features: their norm is the image quality that set aggregation uses).

  With `flip`, the embeddings of each image and its mirror are summed before
  normalising (the standard face-verification test-time augmentation). The last
  batch is zero-padded so `embed_fn` compiles once; `batch_size` is rounded up to a multiple of the local device
  count, over which `jit_embed` splits it. on_batch(n) is called after each batch of n images (a progress bar).
  """
  batch_size = -(-batch_size // jax.local_device_count()) * jax.local_device_count()
  outputs = []
  for start in range(0, len(images), batch_size):
    chunk = normalize(images[start:start + batch_size])
    n = len(chunk)
    chunk = np.pad(chunk, ((0, batch_size - n), (0, 0), (0, 0), (0, 0)))
    emb = embed_fn(chunk)
    if flip:
      emb = emb + embed_fn(chunk[:, :, ::-1])
    outputs.append(np.asarray(emb)[:n])
    if on_batch is not None:
      on_batch(n)
  emb = np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)
  if not normalize_output:
    return emb
  return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def pair_scores(embeddings: np.ndarray, pairs: np.ndarray) -> np.ndarray:
  """Cosine similarity [P] of L2-normalised embeddings for index pairs [P, 2]."""
  return np.sum(embeddings[pairs[:, 0]] * embeddings[pairs[:, 1]], axis=1)


def verification_report(scores: np.ndarray, issame: np.ndarray, n_folds: int = 10, fars=DEFAULT_FARS,
                        roc_points: int = 200, tar_method: str = 'conservative') -> dict:
  """10-fold accuracy, ROC-AUC, TAR@FAR (`tar_at_far` with `tar_method`) and the ROC curve (at most `roc_points`
  points, for plots) of pair scores, JSON-able."""
  kfold = kfold_accuracy(scores, issame, n_folds)
  far, tar, _ = roc_curve(scores, issame)
  keep = np.unique(np.linspace(0, len(far) - 1, min(len(far), roc_points)).astype(int))
  return {
      'pairs': int(len(scores)),
      'accuracy': kfold.accuracy,
      'accuracy_std': kfold.std,
      'auc': float(np.trapezoid(tar, far)),
      'tar_at_far': {str(f): v for f, v in tar_at_far(scores, issame, fars, tar_method).items()},
      'roc': {'far': far[keep].tolist(), 'tar': tar[keep].tolist()},
  }


def jit_embed(fn: Callable[[jax.Array], jax.Array]) -> Callable[[np.ndarray], jax.Array]:
  """`fn` (images [B, ...] -> embeddings [B, E]) jitted with the batch split over this host's devices
  (B must be a multiple of `jax.local_device_count()`; `embed_images` pads to one)."""
  sharding = parallel.batch_sharding(parallel.data_mesh(jax.local_devices()))
  return jax.jit(fn, in_shardings=sharding, out_shardings=sharding)


def backbone_embed_fn(model, variables) -> Callable[[np.ndarray], jax.Array]:
  """A jitted inference forward: normalised images [B, 112, 112, 3] -> embeddings [B, E]."""
  return jit_embed(lambda x: model.apply(variables, x, train=False))
