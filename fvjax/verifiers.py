"""Personalised verifiers of a finished `fvjax hyper` run, as arrays in and arrays out.

    from fvjax import verifiers
    gen = verifiers.load('runs/hyper_celeba_pretrained_cpu')
    thetas = gen.enroll(faces)          # uint8 [U, 112, 112, 3] (one image each) or [U, n, 112, 112, 3] -> [U, D]
    logits = gen.score(thetas, probes)  # uint8 [P, 112, 112, 3] -> float32 [U, P]
    pair_logits = gen.score_pairs(thetas, probes)  # probes [U, 112, 112, 3]: user u on probe u alone -> [U]
    thresholds = gen.thresholds(thetas, far=1e-3)  # [U], on the run's calibration faces (None without them)

Faces are insightface-aligned 112x112 RGB crops (`fvjax.align.read_face` makes them from files and photos).
Several images of a user are enrolled as the mean of their normalised backbone embeddings (renormalised), or for
a `shared_f` run of their normalised pooled f features. Scoring runs through `fvjax.eval.personalized.score_matrix`
(tiled, every device). A row of thetas is exactly what a user file stores and an edge device runs.
"""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fvjax import backbones, calibration, checkpoint, edge
from fvjax.eval import personalized, verification
from fvjax.models.hypernet import enrolment_embedding
from fvjax.train import hyper


@dataclasses.dataclass(frozen=True)
class Verifiers:
  """A trained run's enrolment (faces -> thetas) and its verifier f (thetas x probes -> logits)."""
  spec: edge.VerifierSpec
  config: ml_collections.ConfigDict
  embed_fn: object  # the frozen backbone's features of uint8 faces (flip-summed in `embed_images`)
  enrol_fn: object  # hyper.enrolment_fn: (embeddings [U, E], inputs [U, (n,) s, s, 3]) -> thetas [U, D]
  calibration_set: calibration.CalibrationSet | None

  def enroll(self, faces: np.ndarray) -> np.ndarray:
    """thetas float32 [U, D] from uint8 faces [U, 112, 112, 3] (one each) or [U, n, 112, 112, 3] (n each)."""
    faces = _faces(faces, 'faces', '[U, 112, 112, 3] or [U, n, 112, 112, 3]')
    sets = faces if faces.ndim == 5 else faces[:, None]
    users, n = sets.shape[:2]
    flat = sets.reshape(users * n, *sets.shape[2:])
    embeddings = verification.embed_images(self.embed_fn, flat).reshape(users, n, -1)
    enrolment = np.asarray(jnp.stack([enrolment_embedding(jnp.asarray(e)) for e in embeddings]))
    inputs = edge.verifier_input(flat, self.spec).reshape(users, n, *[self.spec.input_size] * 2, 3)
    return np.asarray(self.enrol_fn(enrolment, inputs if n > 1 else inputs[:, 0]), np.float32)

  def score(self, thetas: np.ndarray, probes: np.ndarray) -> np.ndarray:
    """logits float32 [U, P] of every enrolled user's verifier (thetas [U, D]) on uint8 probes [P, 112, 112, 3]."""
    inputs = edge.verifier_input(_faces(probes, 'probes', '[P, 112, 112, 3]'), self.spec)
    return personalized.score_matrix(thetas, inputs, self.spec)

  def score_pairs(self, thetas: np.ndarray, probes: np.ndarray, chunk: int = 512) -> np.ndarray:
    """logits float32 [U] of user u's verifier on probe u alone (thetas [U, D], uint8 probes [U, 112, 112, 3]):
    the pair protocol's scores, without the U x U matrix."""
    return personalized.pair_logits(thetas, edge.verifier_input(_faces(probes, 'probes', '[U, 112, 112, 3]'),
                                                                self.spec), self.spec, chunk)

  def thresholds(self, thetas: np.ndarray, far: float = 1e-3) -> np.ndarray | None:
    """Each user's logit threshold [U] at false-accept rate `far` on the run's calibration faces (people kept out
    of training; `fvjax.calibration`), or None for a run without them."""
    if self.calibration_set is None:
      return None
    users = personalized.calibrate(np.asarray(thetas, np.float32), self.calibration_set, far, self.spec)
    return np.array([user.threshold for user in users], np.float32)


def load(workdir: str | Path) -> Verifiers:
  """The verifiers of a finished `fvjax hyper` run (a hypernetwork or a shared_f floor) in `workdir`."""
  state, run = checkpoint.load_run(workdir, 'hyper', 'verifier')
  config = ml_collections.ConfigDict(run)
  params = jax.tree.map(jnp.asarray, state['params'])
  return Verifiers(spec=hyper.verifier_spec(config), config=config,
                   embed_fn=backbones.load(config.backbone).features_fn,
                   enrol_fn=hyper.enrolment_fn(config, params),
                   calibration_set=calibration.CalibrationSet.load(workdir))


def _faces(faces: np.ndarray, name: str, shapes: str) -> np.ndarray:
  """`faces` as a NumPy array, or a ValueError naming the expected `shapes` (one '[...]' per allowed rank)."""
  faces = np.asarray(faces)
  if faces.dtype != np.uint8 or faces.ndim not in {s.count(',') + 1 for s in shapes.split(' or ')} \
      or faces.shape[-3:] != (112, 112, 3) or not faces.size:
    raise ValueError(f'{name} must be aligned uint8 faces {shapes}, got {faces.dtype} {list(faces.shape)}')
  return faces
