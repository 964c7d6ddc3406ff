"""Enrolment: a user's personalised verifier from their photos, through a trained hypernetwork.

`from_images` is what `fvjax enroll` runs; the user file it returns is all a device needs (`fvjax verify`).
"""

import dataclasses
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from fvjax import backbones, calibration, edge, userfile
from fvjax.eval import personalized, verification
from fvjax.models.hypernet import enrolment_embedding
from fvjax.train import coreset, hyper


def from_images(hyper_workdir: str | Path, faces: np.ndarray, sources: list[str], name: str, aggregate: str = 'mean',
                coreset_workdir: str | Path | None = None, far: float = 1e-3) -> userfile.User:
  """One user's verifier from one or several enrolment images: aligned uint8 crops [n, 112, 112, 3] (see
  `fvjax.align.read_face` for files and raw photos), `sources` naming them in the user file.

  aggregate: how several images become the generator's input: 'mean' (mean of the
  normalised embeddings, see `enrolment_embedding`) or 'coreset' (the FaceCoresetNet
  descriptor of the set, from a `fvjax coreset` run on the same backbone).
  far: the false-accept rate the user's threshold is calibrated for, on the faces of people the hypernetwork
  run held out of training (`fvjax.calibration`); a run without them leaves the threshold at logit 0.
  """
  if not len(faces):
    raise ValueError('enrolment needs at least one image; none were given')
  if aggregate not in ('mean', 'coreset'):
    raise ValueError(f"unknown aggregate {aggregate!r}; expected 'mean' or 'coreset'")
  generator, params, config = hyper.load_generator(hyper_workdir)
  embed_fn = backbones.load(config.backbone).features_fn
  if aggregate == 'mean':
    enrolment = enrolment_embedding(jnp.asarray(verification.embed_images(embed_fn, faces)))
  else:
    if coreset_workdir is None:
      raise ValueError("aggregate='coreset' needs the workdir of a `fvjax coreset` run")
    aggregator, aggregator_params, coreset_config = coreset.load_aggregator(coreset_workdir)
    backbones.require_same(config.backbone, coreset_config.backbone, hyper_workdir, coreset_workdir)
    features = verification.embed_images(embed_fn, faces, flip=False, normalize_output=False)
    enrolment = aggregator.apply({'params': aggregator_params}, jnp.asarray(features)[None]).descriptor[0]
  inputs = edge.verifier_input(faces, generator.spec)[None] if generator.own_template else None  # [1, n, s, s, 3]
  theta = np.asarray(generator.apply({'params': params}, enrolment[None], inputs)[0])
  calibration_set = calibration.CalibrationSet.load(hyper_workdir)
  calibrated = personalized.calibrate(theta[None], calibration_set, far, generator.spec)[0] if calibration_set else None
  return userfile.User(theta=theta, spec=generator.spec.to_dict(), name=name, sources=tuple(sources),
                       threshold=calibrated.threshold if calibrated else 0.0,
                       calibration=dataclasses.asdict(calibrated) if calibrated else None)

