"""1:N identification: closed-set rank-k accuracy and CMC, open-set DIR@FAR (NumPy).

Scores are [P, G]: probe p against gallery entry g, higher = more alike. A
probe's true gallery entry is `truth[p]`, or -1 for a person not in the gallery
(open set). Ties count against the probe (a rank is 1 + the entries scoring at
least as high as the true one, itself excluded).

DIR@FAR (detection and identification rate, as in the IJB-C 1:N protocol): the
threshold is set on the unknown probes' best scores so that a fraction FAR of
them raise an alarm; DIR is the fraction of known probes whose true entry is
ranked first and scores at or above that threshold.
"""

import numpy as np

from fvjax import calibration


def true_ranks(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
  """[P_known] 1-based rank of each known probe's true entry (probes with truth -1 are skipped)."""
  scores, truth = np.asarray(scores), np.asarray(truth)
  known = truth >= 0
  own = scores[known, truth[known]]
  return np.sum(scores[known] >= own[:, None], axis=1)  # counts the true entry itself: rank 1 = none above


def cmc(scores: np.ndarray, truth: np.ndarray, max_rank: int = 10) -> np.ndarray:
  """[max_rank] cumulative match characteristic: fraction of known probes with rank <= r, r = 1..max_rank."""
  ranks = true_ranks(scores, truth)
  if not ranks.size:
    raise ValueError('closed-set identification needs probes of people in the gallery; none were given')
  return np.array([np.mean(ranks <= r) for r in range(1, max_rank + 1)])


def dir_at_far(scores: np.ndarray, truth: np.ndarray, fars=(0.01, 0.1)) -> dict[str, float]:
  """{far: DIR} with thresholds from the unknown probes' best scores (see the module doc)."""
  scores, truth = np.asarray(scores), np.asarray(truth)
  unknown = truth < 0
  if not unknown.any() or unknown.all():
    raise ValueError('open-set identification needs both known probes and probes of people not in the gallery')
  known_scores, known_truth = scores[~unknown], truth[~unknown]
  first = true_ranks(known_scores, known_truth) == 1
  own = known_scores[np.arange(len(known_truth)), known_truth]
  result = {}
  for far in fars:
    threshold = calibration.threshold_at_far(scores[unknown].max(axis=1), far, identities=0).threshold
    result[str(far)] = float(np.mean(first & (own >= threshold)))
  return result


def report(closed_scores: np.ndarray, closed_truth: np.ndarray, open_scores: np.ndarray, open_truth: np.ndarray,
           fars=(0.01, 0.1), max_rank: int = 10) -> dict:
  """Closed-set rank-1/rank-5/CMC and open-set DIR@FAR of one scoring method."""
  curve = cmc(closed_scores, closed_truth, max_rank)
  return {
      'gallery': int(closed_scores.shape[1]), 'probes': int(closed_scores.shape[0]),
      'rank1': float(curve[0]), 'rank5': float(curve[min(4, max_rank - 1)]), 'cmc': curve.tolist(),
      'open_set': {'gallery': int(open_scores.shape[1]), 'known_probes': int(np.sum(open_truth >= 0)),
                   'unknown_probes': int(np.sum(open_truth < 0)), 'dir_at_far': dir_at_far(open_scores, open_truth,
                                                                                           fars)},
  }


def enrolment_split(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """One enrolment image per identity, the rest probes: (enrol rows [G], probe rows [P], truth [P]) as indices
  into `labels`; truth[p] is the gallery entry of probe p. Identities with one image only enrol."""
  rng = np.random.default_rng(seed)
  identities = np.unique(labels)
  enrol, probes, truth = [], [], []
  for g, identity in enumerate(identities):
    rows = np.flatnonzero(labels == identity)
    pick = rng.integers(len(rows))
    enrol.append(rows[pick])
    rest = np.delete(rows, pick)
    probes.append(rest)
    truth.append(np.full(len(rest), g))
  return np.array(enrol), np.concatenate(probes), np.concatenate(truth)


def open_set(num_gallery: int, truth: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Half the gallery (seeded) stays enrolled: (kept entries [G'], truth [P] re-indexed to them, -1 = unknown)."""
  kept = np.sort(np.random.default_rng(seed).permutation(num_gallery)[:num_gallery // 2])
  index = np.full(num_gallery, -1)
  index[kept] = np.arange(len(kept))
  return kept, index[truth]


def operating_point(scores: np.ndarray, truth: np.ndarray) -> dict:
  """Accept rates of calibrated scores (accept when >= 0): genuine (TAR) and impostor (FAR) probe-entry pairs."""
  genuine = np.zeros(scores.shape, bool)
  genuine[np.arange(len(truth)), truth] = True
  accept = scores >= 0
  return {'tar': float(accept[genuine].mean()), 'far': float(accept[~genuine].mean()),
          'genuine_pairs': int(genuine.sum()), 'impostor_pairs': int((~genuine).sum())}


def evaluate(methods: dict[str, np.ndarray], truth: np.ndarray, seed: int, fars=(0.01, 0.1)) -> dict:
  """{method: `report`} for closed-set scores [P, G] of each method, the open set from `open_set`."""
  kept, open_truth = open_set(next(iter(methods.values())).shape[1], truth, seed)
  return {name: report(scores, truth, scores[:, kept], open_truth, fars) for name, scores in methods.items()}


def format_table(identification: dict) -> str:
  """A hypernetwork run's 1:N report as a table: rank-1/5 (closed set), DIR@FAR (open set), and the accept rates of each
  user's calibrated threshold (genuine = TAR, impostor = FAR) where the run kept calibration faces."""
  methods, point = identification['methods'], identification.get('operating_point', {})
  first = next(iter(methods.values()))
  lines = [f"1:N over {first['gallery']} enrolled people ({first['probes']} probes; open set: "
           f"{first['open_set']['gallery']} enrolled, {first['open_set']['unknown_probes']} probes of the others)",
           f"{'scores':<30}{'rank-1':>8}{'rank-5':>8}{'DIR@1e-2':>10}{'DIR@1e-1':>10}{'accept own':>12}"
           f"{'accept others':>15}"]
  for name, r in methods.items():
    decided = point.get(name.removesuffix('_calibrated')) if name.endswith('_calibrated') else None
    accepts = f"{100 * decided['tar']:>11.1f}%{100 * decided['far']:>14.2f}%" if decided else ''
    lines.append(f"{name:<30}{100 * r['rank1']:>7.1f}%{100 * r['rank5']:>7.1f}%"
                 f"{100 * r['open_set']['dir_at_far']['0.01']:>9.1f}%{100 * r['open_set']['dir_at_far']['0.1']:>9.1f}%"
                 + accepts)
  if point:
    lines.append(f"(calibrated: each user's threshold at FAR {point['far_target']:g} on "
                 f"{point['calibration_images']} faces of people held out of training)")
  return '\n'.join(lines)
