"""Personalised verifiers enrolled from one image versus from a set (beyond both papers).

The hypernetwork (Rozner et al.) enrols a user from one image. Here the same
trained generator also enrols from a set of the user's images, through either
the mean of their embeddings or the FaceCoresetNet descriptor of the set, and
all three are scored on the same users and probes.

Protocol on held-out identities with at least set_size + 1 images: each user's
enrolment set is `set_size` of their images (random, fixed by `seed`); the
single-image enrolment uses the first of those. Probes are every other test
image not used for any enrolment: the user's own are genuine, everyone else's
impostors. Reported per enrolment: the verifiers' pooled report and the
embedding-cosine baseline with the same enrolment (single: the image's
embedding; set mean: the mean embedding; coreset: its descriptor).
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from fvjax import backbones, data, edge
from fvjax.eval import personalized, verification
from fvjax.models.layers import l2_normalize
from fvjax.models.coreset import CoresetAggregator
from fvjax.models.hypernet import enrolment_embedding
from fvjax.train import features as features_lib, hyper


def enrolment_sets(labels: np.ndarray, indices: np.ndarray, set_size: int,
                   seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(enrolment sets [U, set_size] of image indices, probes [P] image indices, probe owner [P] in 0..U-1 or -1)."""
  rng = np.random.default_rng(seed)
  users, enrolled = [], []
  for identity in np.unique(labels[indices]):
    images = indices[labels[indices] == identity]
    if len(images) > set_size:
      users.append(identity)
      enrolled.append(rng.choice(images, set_size, replace=False))
  if len(users) < 2:
    raise ValueError(f'set enrolment needs 2+ identities with more than {set_size} images; found {len(users)}')
  probes = np.setdiff1d(indices, np.concatenate(enrolled))
  owner = np.full(len(probes), -1)
  for u, identity in enumerate(users):
    owner[labels[probes] == identity] = u
  return np.stack(enrolled), probes, owner


def compare(hyper_workdir: str | Path, backbone: str, aggregator: CoresetAggregator,
            aggregator_params, faces: data.FaceDataset, features: np.ndarray, test_idx: np.ndarray, set_size: int,
            seed: int) -> dict:
  """Single-image vs set (mean, coreset) enrolment of the hypernetwork's verifiers on the same users and probes.

  features: raw features [N, 2, C] (image, mirror) from `backbone` (a `fvjax.backbones` name), which must be
  the hypernetwork's backbone too (checked).
  """
  generator, gen_params, h_config = hyper.load_generator(hyper_workdir)
  backbones.require_same(h_config.backbone, backbone, hyper_workdir, 'of the sets')
  spec = generator.spec
  enrolled, probes, owner = enrolment_sets(faces.labels, test_idx, set_size, seed)
  used = np.concatenate([enrolled.ravel(), probes])
  embeddings = features_lib.embeddings(features, used)  # what the generator was trained on (flip-summed, unit)
  inputs = edge.verifier_input(data.decode_all(faces, used), spec)
  row = {image: i for i, image in enumerate(used)}
  set_rows = np.vectorize(row.get)(enrolled)  # [U, set_size] rows of embeddings
  probe_rows = np.vectorize(row.get)(probes)

  raw_sets = jnp.asarray(features[enrolled, 0])  # [U, set_size, C]
  descriptors = aggregator.apply({'params': aggregator_params}, raw_sets).descriptor
  enrolment_embeddings = {
      'single_image': jnp.asarray(embeddings[set_rows[:, 0]]),
      'set_mean': jax.vmap(enrolment_embedding)(jnp.asarray(embeddings[set_rows])),
      'set_coreset': descriptors,
  }
  probe_embeddings = embeddings[probe_rows]
  issame = (owner[None, :] == np.arange(len(enrolled))[:, None]).ravel()
  result = {'users': len(enrolled), 'set_size': set_size, 'probes': len(probes),
            'genuine_pairs': int(issame.sum()), 'impostor_pairs': int((~issame).sum())}
  own_inputs = {}  # f's own view of each enrolment, read by a generator with `own_template`
  if generator.own_template:
    own_inputs = {'single_image': inputs[set_rows[:, 0]], 'set_mean': inputs[set_rows]}
    own_inputs['set_coreset'] = own_inputs['set_mean']
  for name, enrol in enrolment_embeddings.items():
    thetas = np.asarray(generator.apply({'params': gen_params}, enrol, own_inputs.get(name)))
    scores = personalized.score_matrix(thetas, inputs[probe_rows], spec)
    cosine = np.asarray(l2_normalize(enrol)) @ probe_embeddings.T
    result[name] = {'verifier': verification.verification_report(scores.ravel(), issame),
                    'embedding_cosine': verification.verification_report(cosine.ravel(), issame)}
  return result
