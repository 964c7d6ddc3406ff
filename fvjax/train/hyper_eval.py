"""Evaluation of personalised verifiers: the pair protocol (enrol one image of a pair, probe with the other, both
orders, beside the backbone's cosine on the same pairs) and 1:N identification with calibrated thresholds.

`enrol` is `hyper.enrolment_fn`'s (embeddings [U, E], inputs [U, s, s, 3]) -> thetas [U, D].
"""

import numpy as np

from fvjax import calibration, data, edge
from fvjax.eval import identification, personalized, verification
from fvjax.models import verifier
from fvjax.train import features as features_lib


def evaluate_identification(enrol, features, faces: data.FaceDataset, test_idx: np.ndarray,
                            spec: verifier.VerifierSpec, calibration_set, config) -> dict:
  """1:N identification among the held-out identities (`fvjax.eval.identification`): each enrols one image; the
  others probe. Verifier logits and embedding cosines, raw and (with a calibration set) minus each user's
  threshold at `calibration_far`, plus the accept rates of those calibrated decisions."""
  enrolled, probes, truth = identification.enrolment_split(faces.labels[test_idx], config.seed)
  enrolled, probes = test_idx[enrolled], test_idx[probes]
  enrol_embeddings = features_lib.embeddings(features, enrolled)
  thetas = np.asarray(enrol(enrol_embeddings, edge.verifier_input(data.decode_all(faces, enrolled), spec)))
  probe_inputs = edge.verifier_input(data.decode_all(faces, probes), spec)
  methods = {'verifier': personalized.score_matrix(thetas, probe_inputs, spec).T,
             'embedding_cosine': features_lib.embeddings(features, probes) @ enrol_embeddings.T}
  result = {}
  if calibration_set is not None:
    far, people = config.calibration_far, calibration_set.identities
    calibrated = {'verifier': personalized.calibrate(thetas, calibration_set, far, spec),
                  'embedding_cosine': calibration.per_user(enrol_embeddings @ calibration_set.embeddings.T, far,
                                                           people)}
    thresholds = {name: np.array([c.threshold for c in users]) for name, users in calibrated.items()}
    for name in list(methods):
      methods[f'{name}_calibrated'] = methods[name] - thresholds[name][None, :]
    result['operating_point'] = {
        'far_target': config.calibration_far, 'calibration_images': int(len(calibration_set.labels)),
        **{name: identification.operating_point(methods[f'{name}_calibrated'], truth) for name in thresholds}}
  result['methods'] = identification.evaluate(methods, truth, config.seed)
  return result


def identity_pairs(features, faces: data.FaceDataset, idx: np.ndarray, config,
                   spec: verifier.VerifierSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`config.eval_pairs` balanced pairs drawn (seeded) among the images idx [N] of `faces`, as `evaluate_pairs`
  takes them: (embeddings [2P, E], f's inputs [2P, s, s, 3], issame [P])."""
  pairs, issame = verification.make_pairs(faces.labels[idx], config.eval_pairs, config.seed)
  rows = idx[pairs].ravel()
  inputs = edge.verifier_input(data.decode_all(faces, rows), spec)
  return features_lib.embeddings(features, rows), inputs, issame


def evaluate_identity_pairs(enrol, features, faces: data.FaceDataset, idx: np.ndarray, config,
                            spec: verifier.VerifierSpec) -> dict:
  """`evaluate_pairs` on `identity_pairs` of the images idx [N] of `faces`."""
  return evaluate_pairs(enrol, *identity_pairs(features, faces, idx, config, spec), spec)


def enrol_first_scalars(enrol, embeddings: np.ndarray, inputs: np.ndarray, issame: np.ndarray,
                        spec: verifier.VerifierSpec) -> dict[str, float]:
  """AUC and 10-fold accuracy of the verifiers on pairs (2i, 2i + 1), the first image enrolled: what a run logs
  on its validation people while it trains."""
  report = _verifier_report(enrol, embeddings, inputs, issame, spec, enrolled=0)
  return {'auc': report['auc'], 'accuracy': report['accuracy']}


def evaluate_pairs(enrol, embeddings: np.ndarray, inputs: np.ndarray, issame: np.ndarray,
                   spec: verifier.VerifierSpec) -> dict:
  """The pair protocol on P pairs whose images are consecutive rows (2i, 2i+1), as in insightface `.bin` sets.

  embeddings [2P, E] (L2-normalised), inputs [2P, s, s, 3] (f's inputs), issame [P]. Reported for both
  orders, enrol the first image and probe the second ('verifier_enrol_first') and the reverse
  ('verifier_enrol_second'), beside the embedding baseline (cosine of the same embeddings, symmetric).
  enrol: `enrolment_fn`'s (embeddings, inputs) -> thetas.
  """
  pairs = np.arange(len(embeddings)).reshape(-1, 2)
  result = {'embedding_cosine': verification.verification_report(verification.pair_scores(embeddings, pairs), issame)}
  for name, enrolled in {'verifier_enrol_first': 0, 'verifier_enrol_second': 1}.items():
    result[name] = _verifier_report(enrol, embeddings, inputs, issame, spec, enrolled)
  return result


def _verifier_report(enrol, embeddings: np.ndarray, inputs: np.ndarray, issame: np.ndarray,
                     spec: verifier.VerifierSpec, enrolled: int) -> dict:
  """`verification_report` of the verifiers on pairs (2i, 2i + 1): image `enrolled` (0 or 1) of each pair enrolled,
  the other probed."""
  pairs = np.arange(len(embeddings)).reshape(-1, 2)
  enrol_rows, probe_rows = pairs[:, enrolled], pairs[:, 1 - enrolled]
  scores = _pair_logits(enrol, embeddings[enrol_rows], inputs[enrol_rows], inputs[probe_rows], spec)
  return verification.verification_report(scores, issame)


def _pair_logits(enrol, enrol_embeddings: np.ndarray, enrol_inputs: np.ndarray, probes: np.ndarray, spec,
                 chunk: int = 512) -> np.ndarray:
  """f(enrol(row i), probe[i]) for aligned rows, enrolling `chunk` rows at a time (their thetas are large)."""
  return np.concatenate([personalized.pair_logits(np.asarray(enrol(enrol_embeddings[i:i + chunk],
                                                                   enrol_inputs[i:i + chunk])),
                                                  probes[i:i + chunk], spec, chunk)
                         for i in range(0, len(probes), chunk)])
