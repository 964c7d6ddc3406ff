"""Backbone training with a margin-softmax head, optionally distilled from a frozen teacher, then verification on
unseen identities.

`run(config, workdir)` is what `fvjax train`, `fvjax demo` and the
experiments call: load faces -> split identities -> train (resuming) ->
evaluate on held-out identities (and insightface .bin sets, if given) ->
`workdir/report.json`.

Validation (`validation_fraction` > 0): that share of the training identities is kept out of training; every
`eval_every` steps their pairs are scored (AUC, 10-fold accuracy; TensorBoard stream 'validation') and the step
with the best AUC is kept in `workdir/best_checkpoint/`. The report evaluates the last step or, with
`evaluate_checkpoint='best'`, that one, and says which (`steps`, `selection`).

Distillation (`config.teacher`): the student's embedding is pulled towards the teacher's centred verification
descriptor of the same training image, with the loss 1 - cos(student, target). The target is the teacher's image +
mirror features summed and L2-normalised (cached once by `fvjax.train.features`), minus their mean over the
training images, normalised again. Centring matters: dlib_resnet's descriptors share a mean direction of norm 0.92,
so two random faces have cosine 0.84, and a student that outputs only that mean would already score 1 - cos = 0.08
against raw targets; centred, random faces have cosine 0 and the loss is all identity. The target is the clean
image's whatever the augmentation did (flip, crop), so the student learns the teacher's flip-invariant geometry, and
the teacher never runs in the training step. Only the training identities' images are used.
"""

import dataclasses
import json
from pathlib import Path
from typing import Callable, Iterator

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fvjax import backbones, data, models
from fvjax.eval import pairs as pairs_lib, verification
from fvjax.train import features as features_lib
from fvjax.models.heads import MarginConfig, MarginHead
from fvjax.train.loop import LoopConfig, Task, TrainState, evaluated_state, train_from_config
from fvjax.train.optim import OptimizerConfig


def default_config() -> ml_collections.ConfigDict:
  """All fields of a recognition run (experiments override what they need)."""
  c = ml_collections.ConfigDict()
  c.data_dir = ''  # identity folder, or an insightface .rec
  c.align = 'auto'  # identity folders of raw photos: 'auto' aligns images that are not 112x112, 'never' pads them
  c.test_fraction = 0.25  # identities held out for verification (0 with a .rec + eval_bins)
  c.split_seed = 0
  c.validation_fraction = 0.0  # of the training identities, kept out to validate every eval_every steps
  c.eval_every = 500
  c.evaluate_checkpoint = 'last'  # the step the report evaluates: 'last', or 'best' on validation AUC
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
  c.teacher = ''  # distil from this frozen backbone ('pretrained:NAME' or a workdir); '' = margin softmax alone
  c.distill_weight = 1.0  # weight of the descriptor loss 1 - cos(student, teacher) (with a teacher)
  c.margin_weight = 1.0  # weight of the margin-softmax loss (0 with a teacher: pure distillation)
  return c


class FaceClassifier(nn.Module):
  """Backbone + margin head: (images [B,112,112,3], labels [B]) -> (logits [B,K], embeddings [B,E])."""
  backbone: nn.Module
  head: MarginHead

  def __call__(self, images, labels, train: bool):
    embeddings = self.backbone(images, train=train)
    return self.head(embeddings, labels, train=train), embeddings


def descriptor_distillation_loss(student: jax.Array, teacher: jax.Array) -> jax.Array:
  """Mean over the batch of 1 - cos(student_i, teacher_i): student [B, E] raw embeddings, teacher [B, E] (any
  norm). 0 when every student embedding points along its teacher's descriptor, 2 when opposite."""
  chex.assert_equal_shape((student, teacher))
  student = student.astype(jnp.float32)
  cosine = jnp.sum(student * teacher, -1) / (jnp.linalg.norm(student, axis=-1) * jnp.linalg.norm(teacher, axis=-1)
                                             + 1e-12)
  return jnp.mean(1.0 - cosine)


def classification_task(model: FaceClassifier, batches, margin_weight: float = 1.0, distill_weight: float = 0.0
                        ) -> Task:
  """margin_weight x softmax cross-entropy over margin logits + distill_weight x `descriptor_distillation_loss`
  against batch['teacher'] [B, E] (batches carry it when distill_weight is not 0)."""

  def init(rng):
    return model.init(rng, jnp.zeros((1, *models.INPUT_SHAPE)), jnp.zeros((1,), jnp.int32), train=False)

  def loss(params, model_state, batch, rng):
    del rng  # no stochastic layers
    (logits, embeddings), new_state = model.apply({'params': params, **model_state}, batch['image'], batch['label'],
                                                  train=True, mutable=list(model_state))
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']).mean()
    metrics = {'accuracy': jnp.mean(jnp.argmax(logits, -1) == batch['label']), 'cross_entropy': cross_entropy}
    loss = margin_weight * cross_entropy
    if distill_weight:
      metrics['distillation'] = descriptor_distillation_loss(embeddings, batch['teacher'])
      loss += distill_weight * metrics['distillation']
    return loss, (new_state, metrics)

  return Task(init=init, loss=loss, batches=batches)


@dataclasses.dataclass(frozen=True)
class TeacherTargets:
  """A teacher's distillation targets: its raw features [N, 2, E] of every image (and mirror; a read-only memmap)
  and the mean [E] of their verification descriptors over the training images."""
  features: np.ndarray
  centre: np.ndarray

  def __call__(self, rows: np.ndarray) -> np.ndarray:
    """The centred, L2-normalised descriptors [n, E] of dataset images `rows`."""
    centred = features_lib.embeddings(self.features, rows) - self.centre
    return centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)


def teacher_targets(config: ml_collections.ConfigDict, faces: data.FaceDataset, train_idx: np.ndarray,
                    progress: bool = False) -> TeacherTargets:
  """The targets of `config.teacher` on `faces`, centred on the images `train_idx`; its features are cached on disk
  (`fvjax.train.features`). Raises ValueError when its descriptor size is not the student's embedding size."""
  teacher = backbones.load(config.teacher)
  if teacher.embedding_size != config.embedding_size:
    raise ValueError(f'the teacher {config.teacher} gives {teacher.embedding_size}-d descriptors; distil into a '
                     f'student of the same size (embedding_size={teacher.embedding_size}, got {config.embedding_size})')
  split = backbones.DataSplit(str(config.data_dir), float(config.test_fraction), int(config.split_seed), config.align)
  features, teacher_faces = features_lib.backbone_features(teacher, split, progress)
  if len(teacher_faces) != len(faces):
    raise ValueError(f'the teacher saw {len(teacher_faces)} images of {config.data_dir}, the student {len(faces)}')
  return TeacherTargets(features, features_lib.mean_embedding(features, train_idx))


def _with_teacher_targets(batches: Iterator[dict], targets: TeacherTargets) -> Iterator[dict]:
  """Adds 'teacher': the target descriptor [b, E] of each batch row's (clean) image."""
  for batch in batches:
    yield {**batch, 'teacher': targets(batch['index'])}


def validation_fn(backbone: nn.Module, faces: data.FaceDataset, idx: np.ndarray, config
                  ) -> Callable[[TrainState], dict[str, float]]:
  """state -> {'auc', 'accuracy'} of the backbone's cosine on `config.eval_pairs` pairs among the images `idx`
  (decoded once; flip TTA as `eval_flip`)."""
  images, labels = data.decode_all(faces, idx), faces.labels[idx]
  apply = jax.jit(lambda variables, x: backbone.apply(variables, x, train=False))  # compiled once for every state

  def validate(state: TrainState) -> dict[str, float]:
    variables = backbones.backbone_variables(state.params, state.model_state)
    report = pairs_lib.labelled_images_report(images, labels, lambda x: apply(variables, x), config.eval_pairs,
                                              config.split_seed, config.eval_flip)
    return {'auc': report['auc'], 'accuracy': report['accuracy']}

  return validate


def run(config: ml_collections.ConfigDict, workdir: str | Path, stop_at: int | None = None,
        progress: bool = True) -> dict:
  """Trains (resuming from `workdir`) and evaluates; returns and writes the report."""
  workdir = Path(workdir)
  if not config.margin_weight and not (config.teacher and config.distill_weight):
    raise ValueError('nothing to train: margin_weight is 0 and there is no teacher (set teacher and distill_weight)')
  faces = data.load_faces(config.data_dir, align=config.align)
  if config.test_fraction:
    train_idx, test_idx = data.split_identities(faces.labels, config.test_fraction, config.split_seed)
  else:
    train_idx, test_idx = np.arange(len(faces)), np.zeros(0, np.int64)
  validation_idx = np.zeros(0, np.int64)
  if config.validation_fraction:
    fit, held = data.split_identities(faces.labels[train_idx], config.validation_fraction, config.split_seed + 1)
    train_idx, validation_idx = train_idx[fit], train_idx[held]
  stream, num_classes = data.train_batches(faces, train_idx, config.batch_size, config.seed,
                                           data.AugmentConfig(**config.augment))
  model = FaceClassifier(backbones.build_backbone(config), MarginHead(num_classes, MarginConfig(**config.margin)))
  if config.teacher:
    targets = teacher_targets(config, faces, train_idx, progress)
    task = classification_task(model, lambda start: _with_teacher_targets(data.iterate(stream, start), targets),
                               config.margin_weight, config.distill_weight)
  else:
    task = classification_task(model, lambda start: data.iterate(stream, start))
  validate = validation_fn(model.backbone, faces, validation_idx, config) if len(validation_idx) else None
  state = train_from_config(task, config, workdir, stop_at=stop_at, progress=progress, stage='backbone train',
                            validate=validate, validate_every=config.eval_every, select='auc')
  if int(state.step) < config.total_steps:
    return {'step': int(state.step), 'finished': False}
  state, selection = evaluated_state(workdir, state, config.evaluate_checkpoint)
  backbone_vars = backbones.backbone_variables(state.params, state.model_state)
  embed_fn = verification.backbone_embed_fn(model.backbone, backbone_vars)
  report = {
      'backbone': config.backbone,
      'params': models.count_params(backbone_vars),
      'madds': models.count_madds(model.backbone, backbone_vars, models.INPUT_SHAPE),
      'train_identities': int(num_classes),
      'steps': int(state.step),  # the checkpoint this report evaluates (`selection` says why)
      'selection': selection,
      'verification': {},
  }
  if config.teacher:
    report['teacher'] = config.teacher
  if len(test_idx):
    report['test_identities'] = int(len(np.unique(faces.labels[test_idx])))
    report['verification']['held_out_identities'] = pairs_lib.held_out_report(
        faces, test_idx, embed_fn, config.eval_pairs, config.split_seed, config.eval_flip)
  for path in config.eval_bins:
    report['verification'][pairs_lib.report_name(path)] = pairs_lib.pair_set_report(path, embed_fn, config.eval_flip)
  (workdir / 'report.json').write_text(json.dumps(report, indent=2))
  return report
