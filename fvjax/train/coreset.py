"""FaceCoresetNet training on frozen backbone features, model selection, template evaluation.

The frozen backbone is a recognition workdir (`fvjax train`; its identity split
is reused, so test identities are unseen by the backbone and by the aggregator)
or a pretrained model ('pretrained:dlib_resnet', on the config's data_dir and
split; see `fvjax.backbones`). Raw (un-normalised) features of every image and of its mirror
are computed once and streamed from disk (`fvjax.train.features`).

Training sets: each of `sets_per_batch` sets is one training identity, a size
drawn from U{1..max_set_size}, members drawn without replacement (with
replacement once the identity runs out: repeated faces stand in for the
reference's near-duplicate video frames) and each seen as the image or its
mirror at random. Sizes are mixed within a batch (padding masks), where the
reference draws one size per batch. Loss: AdaFace (s=48, m=0.8, h=0.333) on
the set descriptor, its norm as quality, over jointly trained class centres.

Model selection: every `eval_every` steps the run evaluates TAR@FAR on
templates of validation identities (carved out of the training identities,
never the test ones; the reference selected on the test set; TensorBoard stream
'validation') and keeps the best step in `workdir/best_checkpoint/`.
The final report evaluates the selected parameters on test-identity templates
beside mean pooling and norm-weighted pooling, and, when `hyper_workdir` is
set, compares single-image and set enrolment of personalised verifiers.

Quality (`aggregator.quality`): 'norm' reads a member's quality from its feature norm, as the paper; 'learned'
first fits a small head on the frozen features of the training identities (`fvjax.train.quality_head`), then trains
the aggregator with that head frozen inside it, and reports quality-weighted pooling beside the others.
Mixed-quality templates: `degraded_share` of training set members (and of validation template members) are
seeded strong degradations of the same faces (blur, low resolution, occlusion, JPEG; `features.degraded_features`);
`eval_degraded_shares` adds test protocols ('mixed_sets') where that share of each template is degraded.
"""

import dataclasses
import itertools
import json
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fvjax import backbones, checkpoint, data, models, parallel
from fvjax import progress as progress_lib
from fvjax.eval import sets, verification
from fvjax.models.coreset import CoresetAggregator, SetOutput, check_sets
from fvjax.models.heads import MarginConfig, MarginHead
from fvjax.models.quality import QualityHead
from fvjax.train import enrolment, quality_head
from fvjax.train.features import backbone_features, chunked, degraded_features
from fvjax.train.loop import LoopConfig, Task, evaluated_state, train_from_config


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.backbone = ''  # a finished `fvjax train` workdir (its data and split are reused) or 'pretrained:NAME'
  c.data_dir = ''  # identity folder, for a pretrained backbone ('' with a workdir backbone: its data)
  c.align = 'auto'  # for a pretrained backbone: raw photos in data_dir are aligned ('never': padded)
  c.test_fraction = 0.25  # identities held out, for a pretrained backbone (a workdir backbone's own split is reused)
  c.split_seed = 0
  c.aggregator = ml_collections.ConfigDict({'coreset_size': 3, 'num_heads': 8, 'dropout_rate': 0.1,
                                            'gamma_init': 0.01, 'gumbel_tau': 1.0, 'gumbel_scale': 1.0,
                                            'quality': 'norm', 'quality_hidden': 64})
  # quality='learned': the head is fitted first (`fvjax.train.quality_head`), then frozen (optimizer.frozen)
  c.quality_head = ml_collections.ConfigDict({'steps': 500, 'learning_rate': 1e-2})
  # Mixed-quality sets: each training set member is replaced by its degraded copy (`features.degraded_features`,
  # seeded by `seed`) with this probability, and so is this share of each validation template's members.
  c.degraded_share = 0.0
  c.eval_degraded_shares = ()  # extra test protocols ('mixed_sets'): this share of each template's members degraded
  c.margin = ml_collections.ConfigDict({'kind': 'adaface', 's': 48.0, 'm': 0.8, 'h': 0.333, 't_alpha': 0.01})
  c.sets_per_batch = 20
  c.max_set_size = 20
  c.validation_fraction = 0.15  # of the training identities, for model selection
  c.templates = ml_collections.ConfigDict({'per_identity': 4, 'min_size': 1, 'max_size': 8})
  c.selection_far = 1e-2  # model selection maximises TAR at this FAR on validation templates
  c.eval_every = 500
  # TAR@FAR of the reported template pairs: 'conservative' (FAR <= target) or 'insightface' (the closest ROC point,
  # as insightface's IJB evaluation, to compare with published IJB-B/C tables); model selection stays conservative.
  c.tar_at_far_method = 'conservative'
  # IJB-B/C 1:1 in insightface's layout (dir holds meta/ and loose_crop/), evaluated after training when dir is set.
  c.ijb = ml_collections.ConfigDict({'dir': '', 'name': 'IJBC'})
  c.optimizer = ml_collections.ConfigDict({'name': 'adamw', 'learning_rate': 1e-4, 'weight_decay': 1e-3,
                                           'schedule': 'piecewise', 'milestones': (), 'decay_factor': 0.1,
                                           'warmup_steps': 0, 'grad_clip_norm': 1.0,
                                           'frozen': 'quality_head/'})
  c.update(LoopConfig(total_steps=2000, keep_checkpoints=2, log_every=50).as_fields())
  c.hyper_workdir = ''  # optional: a hypernetwork run on the same backbone, to compare set vs single enrolment
  c.enrolment = ml_collections.ConfigDict({'set_size': 5, 'seed': 0})
  return c


class SetClassifier(nn.Module):
  """Aggregator + margin head: (sets [B, T, C], mask [B, T], labels [B]) -> (logits [B, K], SetOutput)."""
  aggregator: CoresetAggregator
  head: MarginHead

  def __call__(self, features, mask, labels, train: bool) -> tuple[jax.Array, SetOutput]:
    out = self.aggregator(features, mask, train=train)
    return self.head(out.aggregate, labels, train=train), out


def build_aggregator(config) -> CoresetAggregator:
  return CoresetAggregator(**config.aggregator)


def set_task(model: SetClassifier, feature_size: int, batches, quality_head: dict | None = None) -> Task:
  """Softmax cross-entropy over AdaFace logits of the set descriptors; `quality_head`: the fitted params of the
  aggregator's learned quality head, put in place at init (the optimizer's `frozen` keeps them)."""

  def init(rng):
    gumbel, dropout, params = jax.random.split(rng, 3)
    dummy = jnp.ones((1, 2, feature_size))
    variables = model.init({'params': params, 'gumbel': gumbel, 'dropout': dropout}, dummy, jnp.ones((1, 2), bool),
                           jnp.zeros((1,), jnp.int32), train=False)
    if quality_head is not None:
      params = variables['params']
      variables = {**variables, 'params': {**params, 'aggregator': {**params['aggregator'],
                                                                    'quality_head': quality_head}}}
    return variables

  def loss(params, model_state, batch, rng):
    gumbel, dropout = jax.random.split(rng)
    (logits, out), new_state = model.apply({'params': params, **model_state}, batch['features'], batch['mask'],
                                           batch['label'], train=True, mutable=list(model_state),
                                           rngs={'gumbel': gumbel, 'dropout': dropout})
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']).mean()
    metrics = {'accuracy': jnp.mean(jnp.argmax(logits, -1) == batch['label']),
               'gamma': params['aggregator']['gamma'], 'set_quality': jnp.mean(out.quality)}
    return loss, (new_state, metrics)

  return Task(init=init, loss=loss, batches=batches)


def make_batches(features: np.ndarray, image_indices: np.ndarray, image_classes: np.ndarray, config,
                 hosts: int | None = None, host: int | None = None, degraded: np.ndarray | None = None):
  """batches(start) -> this host's rows of the step-indexed set batches (pure function of (seed, step)).

  features [N, 2, C] (image, mirror); image_indices / image_classes: training images and their class in
  0..num_classes-1; degraded [N, 1, C]: each member is its degraded copy with probability
  `config.degraded_share` (else the image or its mirror at random). Global batch: features [S, T, C], mask [S, T], label [S] with S = sets_per_batch and
  T = max_set_size. Every host draws the whole batch's members (indices: cheap) and reads the features of
  its own block of sets only; the hosts' blocks in order assemble the single-host batch.
  """
  by_class = [image_indices[image_classes == k] for k in range(int(image_classes.max()) + 1)]
  s, t = config.sets_per_batch, config.max_set_size
  share = config.get('degraded_share', 0.0)
  if share and degraded is None:
    raise ValueError('degraded_share > 0 needs the degraded features')
  mine = parallel.host_block(s, 'sets_per_batch', hosts, host)

  def batch(step):
    rng = np.random.default_rng([config.seed, step])
    labels = rng.integers(0, len(by_class), s)
    draws = []  # (members, image-or-mirror) of each set
    for label in labels:
      pool = by_class[label]
      n = int(rng.integers(1, t + 1))
      members, views = rng.choice(pool, n, replace=n > len(pool)), rng.integers(0, 2, n)
      if share:
        views = np.where(rng.random(n) < share, 2, views)  # view 2: the degraded copy
      draws.append((members, views))
    draws = draws[mine]
    out = np.zeros((len(draws), t, features.shape[-1]), np.float32)
    mask = np.zeros((len(draws), t), bool)
    for i, (members, views) in enumerate(draws):
      clean = views < 2
      out[i, :len(members)][clean] = features[members[clean], views[clean]]
      if not clean.all():
        out[i, :len(members)][~clean] = degraded[members[~clean], 0]
      mask[i, :len(members)] = True
    return {'features': out, 'mask': mask, 'label': labels[mine].astype(np.int32)}

  return lambda start: (batch(step) for step in itertools.count(start))


def identity_split(faces: data.FaceDataset, split: backbones.DataSplit, validation_fraction: float, seed: int):
  """(fit, validation, test) image indices: the backbone's split, its training identities split once more."""
  train_idx, test_idx = data.split_identities(faces.labels, split.test_fraction, split.split_seed)
  fit_rel, val_rel = data.split_identities(faces.labels[train_idx], validation_fraction, seed)
  return train_idx[fit_rel], train_idx[val_rel], test_idx


def protocol_for(labels: np.ndarray, indices: np.ndarray, config, seed: int) -> sets.TemplateProtocol:
  """Identity templates over the images `indices` (members are global image indices)."""
  t = config.templates
  p = sets.identity_templates(labels[indices], t.per_identity, (t.min_size, t.max_size), seed)
  return dataclasses.replace(p, members=tuple(indices[m] for m in p.members))


def run(config: ml_collections.ConfigDict, workdir: str | Path, progress: bool = True) -> dict:
  """Trains the aggregator with model selection on validation identities; evaluates on test identities."""
  workdir = Path(workdir)
  if not config.validation_fraction:
    raise ValueError('config field validation_fraction must be > 0: FaceCoresetNet selects its step on validation '
                     'identities')
  backbone = backbones.load(config.backbone)
  split = backbone.data_split(config)
  features, faces = backbone_features(backbone, split, progress)
  fit_idx, val_idx, test_idx = identity_split(faces, split, config.validation_fraction, config.seed)
  degraded = None
  if config.degraded_share or config.eval_degraded_shares or config.aggregator.quality == 'learned':
    degraded, _ = degraded_features(backbone, split, config.seed, progress)
  progress_lib.say('coreset', 'checking features, building sets and the validation templates', progress)
  for rows in chunked(np.arange(len(features))):  # NaN / zero features from the backbone
    check_sets(features[rows].reshape(1, -1, features.shape[-1]))
  head = None
  if config.aggregator.quality == 'learned':
    progress_lib.say('coreset', 'fitting the quality head', progress)
    inputs, targets = quality_head.identity_targets(features[fit_idx, 0], degraded[fit_idx, 0], faces.labels[fit_idx])
    head = quality_head.fit(inputs, targets, config.aggregator.quality_hidden, seed=config.seed,
                            **config.quality_head)
  _, fit_classes = np.unique(faces.labels[fit_idx], return_inverse=True)
  model = SetClassifier(build_aggregator(config),
                        MarginHead(int(fit_classes.max()) + 1, MarginConfig(**config.margin)))
  task = set_task(model, features.shape[-1],
                  make_batches(features, fit_idx, fit_classes, config, degraded=degraded), head)
  # Template features: the clean images, then (when made) their degraded copies, rows offset by N.
  template_features = features[:, 0] if degraded is None else np.concatenate([features[:, 0], degraded[:, 0]])
  validation = protocol_for(faces.labels, val_idx, config, config.seed)
  if config.degraded_share:
    validation = sets.mixed_quality(validation, config.degraded_share, len(features), config.seed)
  selection_key = f'tar_at_far_{config.selection_far:g}'

  def validate(state) -> dict[str, float]:
    progress_lib.say('coreset eval', f'validation templates at step {int(state.step)}', progress)
    descriptor_fn = sets.coreset_descriptor_fn(model.aggregator, state.params['aggregator'])
    result = sets.evaluate_templates(descriptor_fn, template_features, validation)
    return {'auc': result['auc'], selection_key: result['tar_at_far'][str(config.selection_far)]}

  state = train_from_config(task, config, workdir, progress=progress, stage='coreset train', validate=validate,
                            validate_every=config.eval_every, select=selection_key)
  state, selection = evaluated_state(workdir, state, 'best')
  params = state.params['aggregator']
  progress_lib.say('coreset eval', f"held-out templates with step {int(state.step)}'s aggregator", progress)
  protocol = protocol_for(faces.labels, test_idx, config, config.seed + 1)
  descriptor_fns = {'coreset': sets.coreset_descriptor_fn(model.aggregator, params), **sets.pooling_baselines()}
  if head is not None:
    descriptor_fns['quality_weighted_pooling'] = sets.quality_weighted_fn(QualityHead(config.aggregator.quality_hidden),
                                                                          params['quality_head'])
  report = {
      'steps': int(state.step),  # the selected checkpoint, which load_aggregator reads
      'selection': {**selection, 'metric': f'TAR@FAR={config.selection_far} on '
                                           f'{len(np.unique(faces.labels[val_idx]))} validation identities'},
      'aggregator_params': models.count_params(params),
      'coreset_size': config.aggregator.coreset_size,
      'gamma': float(params['gamma']),
      'test_identities': int(len(np.unique(faces.labels[test_idx]))),
      'templates': len(protocol.members),
      'template_pairs': {'genuine': int(protocol.issame.sum()), 'impostor': int((~protocol.issame).sum())},
      'sets': {name: sets.evaluate_templates(fn, template_features, protocol, tar_method=config.tar_at_far_method)
               for name, fn in descriptor_fns.items()},
  }
  for share in config.eval_degraded_shares:
    progress_lib.say('coreset eval', f'held-out templates with {share:g} of their members degraded', progress)
    mixed = sets.mixed_quality(protocol, share, len(features), config.seed + 1)
    report.setdefault('mixed_sets', {})[f'{share:g}'] = {
        name: sets.evaluate_templates(fn, template_features, mixed, tar_method=config.tar_at_far_method)
        for name, fn in descriptor_fns.items()}
  if config.ijb.dir:
    report['ijb'] = {config.ijb.name: evaluate_ijb(backbone, config.ijb.dir, config.ijb.name, descriptor_fns,
                                                   config.tar_at_far_method)}
  if config.hyper_workdir:
    progress_lib.say('coreset eval', 'enrolling verifiers from one image vs a set', progress)
    report['enrolment'] = enrolment.compare(config.hyper_workdir, config.backbone, model.aggregator, params,
                                            faces, features, test_idx, config.enrolment.set_size,
                                            config.enrolment.seed)
  progress_lib.quiet()
  (workdir / 'report.json').write_text(json.dumps(report, indent=2))
  return report


def evaluate_ijb(backbone: backbones.FrozenBackbone, ijb_dir: str | Path, name: str, descriptor_fns: dict,
                 tar_method: str, batch_size: int = 256) -> dict:
  """{descriptor: report} on IJB's template pairs: each loose crop aligned from its landmarks (`sets.IJBFaces`),
  embedded by the frozen backbone (raw features, no flip), then aggregated per template."""
  faces = sets.IJBFaces.read(ijb_dir, name)
  names, _, protocol = sets.read_ijb(Path(ijb_dir) / 'meta', name)
  if names.tolist() != faces.names.tolist():
    raise ValueError(f'{ijb_dir}: the landmarks file and {name.lower()}_face_tid_mid.txt list different images')
  features = np.concatenate([
      verification.embed_images(backbone.features_fn, faces.aligned(rows), flip=False, normalize_output=False)
      for rows in chunked(np.arange(len(faces)), batch_size)])
  return {key: sets.evaluate_templates(fn, features, protocol, tar_method=tar_method)
          for key, fn in descriptor_fns.items()}


def load_aggregator(workdir: str | Path) -> tuple[CoresetAggregator, dict, ml_collections.ConfigDict]:
  """(aggregator, its selected params, its run config) from a finished coreset workdir."""
  workdir = Path(workdir)
  if checkpoint.described_step(workdir) is None:
    raise FileNotFoundError(f'{workdir / "report.json"} not found: {workdir} is not a finished `fvjax coreset` run')
  state, run_config = checkpoint.load_run(workdir, 'coreset', 'aggregator')
  config = ml_collections.ConfigDict(run_config)
  return build_aggregator(config), state['params']['aggregator'], config
