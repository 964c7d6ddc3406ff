"""Backbone training with a margin-softmax head, then verification on unseen identities.

`run(config, workdir)` is what `fvjax train`, `fvjax demo` and the
experiments call: load faces -> split identities -> train (resuming) ->
evaluate on held-out identities (and insightface .bin sets, if given) ->
`workdir/report.json`.
"""

import dataclasses
import json
from pathlib import Path

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fvjax import backbones, data, models
from fvjax.eval import pairs as pairs_lib, verification
from fvjax.models.heads import MarginConfig, MarginHead
from fvjax.train.loop import LoopConfig, Task, train_from_config
from fvjax.train.optim import OptimizerConfig


def default_config() -> ml_collections.ConfigDict:
  """All fields of a recognition run (experiments override what they need)."""
  c = ml_collections.ConfigDict()
  c.data_dir = ''  # identity folder, or an insightface .rec
  c.align = 'auto'  # identity folders of raw photos: 'auto' aligns images that are not 112x112, 'never' pads them
  c.test_fraction = 0.25  # identities held out for verification (0 with a .rec + eval_bins)
  c.split_seed = 0
  c.backbone = 'seesaw_shuffle'
  c.embedding_size = 512
  c.activation = ''  # '' = the backbone's default
  c.dtype = 'float32'  # compute dtype ('bfloat16' on GPU/TPU)
  c.margin = ml_collections.ConfigDict(dataclasses.asdict(MarginConfig()))
  c.batch_size = 64  # global, over all devices and hosts
  c.augment = ml_collections.ConfigDict(dataclasses.asdict(data.AugmentConfig()))
  c.optimizer = ml_collections.ConfigDict(dataclasses.asdict(OptimizerConfig()))
  c.update(LoopConfig(total_steps=1000).as_fields())
  c.eval_pairs = 3000  # pairs drawn from the held-out identities
  c.eval_bins = ()  # pair sets: insightface .bin files or LFW-layout folders (pairs.txt)
  c.eval_flip = True
  return c


class FaceClassifier(nn.Module):
  """Backbone + margin head: (images [B,112,112,3], labels [B]) -> (logits [B,K], embeddings [B,E])."""
  backbone: nn.Module
  head: MarginHead

  def __call__(self, images, labels, train: bool):
    embeddings = self.backbone(images, train=train)
    return self.head(embeddings, labels, train=train), embeddings


def classification_task(model: FaceClassifier, batches) -> Task:
  """Softmax cross-entropy over margin logits."""

  def init(rng):
    return model.init(rng, jnp.zeros((1, *models.INPUT_SHAPE)), jnp.zeros((1,), jnp.int32), train=False)

  def loss(params, model_state, batch, rng):
    del rng  # no stochastic layers
    (logits, _), new_state = model.apply({'params': params, **model_state}, batch['image'], batch['label'],
                                         train=True, mutable=list(model_state))
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']).mean()
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch['label'])
    return loss, (new_state, {'accuracy': accuracy})

  return Task(init=init, loss=loss, batches=batches)


def run(config: ml_collections.ConfigDict, workdir: str | Path, stop_at: int | None = None,
        progress: bool = True) -> dict:
  """Trains (resuming from `workdir`) and evaluates; returns and writes the report."""
  workdir = Path(workdir)
  faces = data.load_faces(config.data_dir, align=config.align)
  if config.test_fraction:
    train_idx, test_idx = data.split_identities(faces.labels, config.test_fraction, config.split_seed)
  else:
    train_idx, test_idx = np.arange(len(faces)), np.zeros(0, np.int64)
  stream, num_classes = data.train_batches(faces, train_idx, config.batch_size, config.seed,
                                           data.AugmentConfig(**config.augment))
  model = FaceClassifier(backbones.build_backbone(config), MarginHead(num_classes, MarginConfig(**config.margin)))
  task = classification_task(model, lambda start: data.iterate(stream, start))
  state = train_from_config(task, config, workdir, stop_at=stop_at, progress=progress)
  if int(state.step) < config.total_steps:
    return {'step': int(state.step), 'finished': False}
  backbone_vars = backbones.backbone_variables(state.params, state.model_state)
  embed_fn = verification.backbone_embed_fn(model.backbone, backbone_vars)
  report = {
      'backbone': config.backbone,
      'params': models.count_params(backbone_vars),
      'madds': models.count_madds(model.backbone, backbone_vars, models.INPUT_SHAPE),
      'train_identities': int(num_classes),
      'steps': int(state.step),
      'verification': {},
  }
  if len(test_idx):
    report['test_identities'] = int(len(np.unique(faces.labels[test_idx])))
    report['verification']['held_out_identities'] = pairs_lib.held_out_report(
        faces, test_idx, embed_fn, config.eval_pairs, config.split_seed, config.eval_flip)
  for path in config.eval_bins:
    report['verification'][pairs_lib.report_name(path)] = pairs_lib.pair_set_report(path, embed_fn, config.eval_flip)
  (workdir / 'report.json').write_text(json.dumps(report, indent=2))
  return report
