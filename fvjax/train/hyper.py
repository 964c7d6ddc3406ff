"""Hypernetwork personalised verifiers (Rozner et al., FG 2024): training and evaluation.

The frozen backbone h_bb is a recognition workdir (`fvjax train`; its data and
identity split are reused) or a pretrained model ('pretrained:dlib_resnet', on
the config's data_dir and split; see `fvjax.backbones`). Its features of every training image are computed once and streamed from disk
(`fvjax.train.features`: h_bb never changes, so it never enters the train
step); the probe images of each batch are decoded and resized to f's input in
host threads ahead of the device, so the training set need not fit in memory
(MS1MV2-scale `.rec` files stream the same way as a small folder). Each step draws
`users_per_batch` identities (from one k-means cluster of identity centroids
once `kcs_start` is reached: KCS hard negatives; uniformly before), one
enrolment image and `positives_per_user` other images per user. Every user's
generated f scores every probe of the batch: its own images are positives, the
other users' (look-alike) images negatives.

Loss (`fvjax.train.objectives`, which holds the tasks; evaluation:
`fvjax.train.hyper_eval`) = weighted BCE (positives weighted `positive_weight`, default #negatives / #positives) + distill_weight * the
squared distance of each logit to the backbone's cosine of its pair (0 in the
paper's objective) + norm_penalty * mean ||theta||^2, the penalty switched on
from `norm_penalty_start` (the schedule of objectives; the paper's exact
schedule is not reproduced, so both switch points are config fields).

The generator is the paper's (every weight of f generated) or one with a shared
base (`shared_base`, `personal_layers`: theta_u = theta_0 + delta(e_u), see
`fvjax.models.hypernet`); f's layers before the first personal one then run
once per probe in the train step, not once per (user, probe) pair.
`method='shared_f'` trains the floor instead: f's own layout as one network
shared by every user, enrolling a user from f's own (normalised, pooled)
features of the enrolment image, with the same batches and objective (its
pairs: every probe of a batch against every other).

Evaluation, the pair protocol: enrol with one image of a pair, probe with the
other, in both orders, beside the embedding-cosine baseline of the same
backbone; on pairs of the backbone run's held-out identities, on every
insightface `.bin` set in `eval_bins` (LFW, CFP-FP, AgeDB-30, ...), and on pairs
of the generator's own training images ('training_identities'): what it fits
on people it has seen, so that the gap to the held-out people measures how far
it generalises rather than how well it fits.

Validation: the calibration people (kept out of training) are scored every `eval_every` steps; the step with the
best AUC is kept in `workdir/best_checkpoint/`, and `evaluate_checkpoint='best'` reports (and enrols with) it.
"""

import dataclasses
import json
from pathlib import Path

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fvjax import backbones, calibration, checkpoint, data, edge, models, parallel
from fvjax import progress as progress_lib
from fvjax.eval import pairs as pairs_lib
from fvjax.models import verifier
from fvjax.models.hypernet import WeightGenerator
from fvjax.train import extra_people, features as features_lib, hyper_eval, kcs, objectives
from fvjax.train.loop import LoopConfig, evaluated_state, train_from_config


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.backbone = ''  # h_bb: a finished `fvjax train` workdir (its data and split are reused) or 'pretrained:NAME'
  c.data_dir = ''  # identity folder or .rec, for a pretrained backbone ('' with a workdir backbone: its data)
  c.align = 'auto'  # for a pretrained backbone: raw photos in data_dir are aligned ('never': padded)
  c.test_fraction = 0.25  # identities held out, for a pretrained backbone (a workdir backbone's own split is reused)
  c.split_seed = 0
  # Training identities kept out of the generator's training: their faces, stored with the run, calibrate each
  # enrolment's threshold (`fvjax.calibration`). At most calibration_images of them are kept.
  c.calibration_fraction = 0.1
  c.calibration_images = 1000
  c.calibration_far = 1e-3  # the run's identification report's operating point (`fvjax enroll --far`: a user's)
  c.max_train_identities = 0  # >0: the generator trains on only this many of its training identities (nested samples)
  # Identity folders whose people join the training identities (never held out or reported; fvjax.train.extra_people),
  # less those named in extra_train_exclude (a names file such as CFP's names.txt).
  c.extra_train_dirs = ()
  c.extra_train_exclude = ''
  c.method = 'hypernetwork'  # or 'shared_f': no generator, f's layout shared by all users (the floor; module doc)
  c.verifier = ml_collections.ConfigDict({'input_size': 64, 'channels': (16, 32, 32, 32), 'strides': (2, 2, 2, 1),
                                          'normalize_features': False, 'pooling': 'mean'})
  c.hidden = 256  # the generator's trunk width; 0: a linear generator (fvjax.models.hypernet)
  c.shared_base = False  # True: theta_u = theta_0 + delta(e_u) (fvjax.models.hypernet); False: the paper's form
  c.personal_layers = ('logit',)  # with shared_base: f's layers that differ between users
  c.own_template = False  # with shared_base: f's own features of the enrolment image join its logit kernel
  c.users_per_batch = 16
  c.positives_per_user = 2
  c.num_clusters = 6
  # The schedule of objectives: plain weighted BCE on uniformly drawn users first, then KCS hard negatives and the
  # norm penalty. Switching both on early (step 100 of 400) left f a constant (training BCE at ln 2) on CelebA;
  # at half-way the verifiers reach the embedding baseline (experiments/README.md).
  c.kcs_start = 1000
  c.positive_weight = 0.0  # 0: #negatives / #positives of the batch
  # Graded targets from the backbone (fvjax.train.objectives): 0 is the paper's objective.
  c.distill_weight = 0.0
  c.distill_centre = 0.3  # the centred cosine that maps to logit 0
  c.distill_scale = 10.0  # logits per unit of cosine
  # f's shared layers regress the backbone's embedding of every probe through a training-only linear head
  # (fvjax.train.objectives.feature_distillation; needs shared_base, or method='shared_f'). 0: off.
  c.feature_distill_weight = 0.0
  c.distill_only_stem = False  # True: f's shared layers before the personal ones learn from feature distillation alone
  c.tied_feature_head = False  # True (hidden=0): feature distillation's head is the generator's logit-kernel map
  c.distill_only_map = False  # True (tied head): the pair loss trains only that map's scale, not its direction
  c.centre_embeddings = True  # the generator's input centred on the mean training embedding (see WeightGenerator)
  c.norm_penalty = 1e-4
  c.norm_penalty_start = 1000
  # weight_decay_rules: (regex, rate) pairs over the parameter paths (`fvjax.train.optim.OptimizerConfig`); f's shared
  # base 'theta_0' is one flat vector, so the kernels-only default rule never decays it.
  c.optimizer = ml_collections.ConfigDict({'name': 'adamw', 'learning_rate': 1e-3, 'weight_decay': 1e-4,
                                           'schedule': 'cosine', 'warmup_steps': 20, 'weight_decay_rules': ()})
  c.update(LoopConfig(total_steps=2000, keep_checkpoints=2, log_every=20).as_fields())
  # Augmentation of the probe images f is trained on (`fvjax.data.AugmentConfig`: flip, reflect-pad crop, contrast and
  # brightness jitter; all off by default); enrolment embeddings are the cached clean ones.
  c.probe_augment = ml_collections.ConfigDict({**dataclasses.asdict(data.AugmentConfig()), 'flip': 0.0})
  # >0: each probe is one of this many fixed augmented copies of its image, whose backbone embedding (computed once,
  # `features_lib.augmented_features`) is its target in feature distillation and graded targets: the teacher sees what f
  # sees; with extra_train_dirs, their people's images are copied too. 0: probes are augmented afresh every step and
  # their targets are the clean images' embeddings.
  c.probe_views = 0
  # With probe_views: each copy blends in another training image with a share drawn from U[0, probe_mixup]
  # (`features_lib.Mixup`: function matching's mixup; its target is the backbone's embedding of the blend, its
  # identity label stays the copy's). 0: off.
  c.probe_mixup = 0.0
  c.eval_pairs = 3000  # pairs drawn from the backbone run's held-out identities (if it held any out)
  c.eval_every = 500  # steps between validations on the calibration people (TensorBoard 'validation/auc')
  c.evaluate_checkpoint = 'last'  # the step the report evaluates: 'last', or 'best' on validation AUC
  c.identification = True  # also the 1:N identification report on the held-out identities
  c.eval_bins = ()  # insightface .bin verification sets for the pair protocol
  c.decode_threads = 4  # host threads decoding each batch's probe images
  return c


def load_generator(workdir: str | Path) -> tuple[WeightGenerator, dict, ml_collections.ConfigDict]:
  """(generator, its params, its run config) from a hypernetwork workdir."""
  state, run = checkpoint.load_run(workdir, 'hyper', 'verifier')
  config = ml_collections.ConfigDict(run)
  if config.get('method', 'hypernetwork') != 'hypernetwork':
    raise ValueError(f'{workdir} is a {config.method} run: it enrols without a generator (use fvjax.verifiers.load)')
  return make_generator(config), jax.tree.map(jnp.asarray, state['params']), config


def make_generator(config) -> WeightGenerator:
  """The generator a run config describes (configs from before `shared_base` describe the paper's form)."""
  return WeightGenerator(verifier_spec(config), config.hidden, shared_base=config.get('shared_base', False),
                         personal_layers=tuple(config.get('personal_layers', ('logit',))),
                         own_template=config.get('own_template', False))


def verifier_spec(config) -> verifier.VerifierSpec:
  v = config.verifier
  return verifier.VerifierSpec(input_size=v.input_size, channels=tuple(v.channels), strides=tuple(v.strides),
                               normalize_features=v.get('normalize_features', False),
                               pooling=v.get('pooling', 'mean'))


def objective(config) -> dict:
  """The keyword arguments of `objectives.pair_loss` that a run config sets."""
  return {'positive_weight': config.positive_weight, 'distill_weight': config.get('distill_weight', 0.0),
          'distill_centre': config.get('distill_centre', 0.0), 'distill_scale': config.get('distill_scale', 1.0)}


def make_batches(features, faces: data.FaceDataset, image_indices, image_labels, config, cluster_of, identities,
                 spec: verifier.VerifierSpec, hosts: int | None = None, host: int | None = None, view_features=None,
                 mixup: features_lib.Mixup | None = None):
  """batches(start) -> this host's rows of the step-indexed user batches, from step `start` on.

  features: the backbone's raw features [N, 2, C] (a memmap; enrolment embeddings are read row by row).
  view_features: with `config.probe_views` > 0, the raw features [N, probe_views, C] of the augmented copies
  (`features_lib.augmented_features`): each probe is one of its image's copies, drawn per step, with that copy's
  embedding as its probe_embed; mixup: the copies' partners, as they were made for `view_features`.
  image_indices / image_labels: the training images and their identities; identities [I] with
  cluster_of [I]: the identities that may be drawn as users. Batch s is a pure function of (seed, s):
  enrol [U, C] embeddings, probes [U*m, s, s, 3] decoded inputs, probe_embed [U*m, C] the probes' embeddings
  (of the clean images, or of the drawn copies), probe_user [U*m] (the user each probe
  belongs to, an index into the global batch), norm_weight [U]; with `own_template`, enrol_inputs [U, s, s, 3]
  the enrolment images' (clean) inputs of f. With several hosts, host h gets the
  contiguous block h of the users and their probes, so the hosts' blocks assemble the single-host batch.
  """
  u, m = config.users_per_batch, config.positives_per_user
  mine = parallel.host_block(u, 'users_per_batch', hosts, host)
  augmentation = data.AugmentConfig(**config.probe_augment)
  order = np.argsort(image_labels, kind='stable')
  ids, starts = np.unique(image_labels[order], return_index=True)
  by_id = dict(zip(ids, np.split(image_indices[order], starts[1:])))

  def batch(step: int) -> dict:
    rng = np.random.default_rng([config.seed, step])
    if step >= config.kcs_start:
      users = identities[kcs.kcs_batch(cluster_of, u, rng)]
    else:
      users = rng.choice(identities, u, replace=False)
    picks = np.stack([rng.choice(by_id[i], m + 1, replace=False) for i in users])[mine]  # [U/hosts, 1 + m]
    probes = picks[:, 1:].ravel()
    if view_features is not None:  # fixed copies, drawn for the global batch so the hosts' blocks are its rows
      views = rng.integers(config.probe_views, size=(u, m))[mine].ravel()
      images = np.stack([features_lib.augmented_view(faces.decode(i), int(i), int(v), config.seed, augmentation, mixup)
                         for i, v in zip(probes, views)])
      probe_embed = features_lib.view_embeddings(view_features, probes, views)
    else:  # fresh copies, seeded by each probe's global row so the hosts' blocks are the single-host batch's
      positions = np.arange(u * m).reshape(u, m)[mine].ravel()
      images = np.stack([data.augment(faces.decode(i), np.random.default_rng([config.seed, step, int(row)]),
                                      augmentation) for i, row in zip(probes, positions)])
      probe_embed = features_lib.embeddings(features, probes)
    norm_weight = config.norm_penalty if step >= config.norm_penalty_start else 0.0
    batch = {
        'enrol': features_lib.embeddings(features, picks[:, 0]),
        'probes': edge.verifier_input(images, spec),
        'probe_embed': probe_embed,
        'probe_user': np.repeat(np.arange(u)[mine], m).astype(np.int32),
        'norm_weight': np.full(len(picks), norm_weight, np.float32),
    }
    if config.get('own_template'):  # f's (clean) inputs of the enrolment images
      batch['enrol_inputs'] = edge.verifier_input(np.stack([faces.decode(i) for i in picks[:, 0]]), spec)
    return batch

  steps = grain.MapDataset.range(config.total_steps).map(batch)
  return lambda start: data.iterate(steps, start, num_threads=config.decode_threads)


def run(config: ml_collections.ConfigDict, workdir: str | Path, progress: bool = True) -> dict:
  """Trains h_gen on the backbone run's training identities; evaluates the pair protocol (see the module doc)."""
  workdir = Path(workdir)
  if config.get('probe_mixup') and not config.probe_views:
    raise ValueError('probe_mixup blends the fixed augmented copies: it needs probe_views > 0')
  backbone = backbones.load(config.backbone)
  split = backbone.data_split(config)
  features, faces = features_lib.backbone_features(backbone, split, progress)
  spec = verifier_spec(config)
  if split.test_fraction:
    train_idx, test_idx = data.split_identities(faces.labels, split.test_fraction, split.split_seed)
  else:
    train_idx, test_idx = np.arange(len(faces)), np.zeros(0, np.int64)
  train_idx, calibration_idx = hold_out_calibration(faces.labels, train_idx, config)
  if config.extra_train_dirs:
    features, faces, added = extra_people.add_people(backbone, features, faces, tuple(config.extra_train_dirs),
                                                     split.align, config.extra_train_exclude, progress)
    train_idx = np.concatenate([train_idx, added])
  train_labels = faces.labels[train_idx]
  usable = np.bincount(train_labels)[train_labels] >= config.positives_per_user + 1  # enrolment + positives
  # The limit samples people who can be drawn as users (LFW, say, holds many one-image people).
  image_indices = limit_identities(faces.labels, train_idx[usable], config.max_train_identities, config.seed)
  image_labels = faces.labels[image_indices]
  if len(calibration_idx) and jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    calibration.CalibrationSet(edge.verifier_pixels(data.decode_all(faces, calibration_idx), spec),
                               features_lib.embeddings(features, calibration_idx),
                               faces.labels[calibration_idx]).save(workdir)

  progress_lib.say('hyper', 'users, clusters and batches', progress)
  identities, centroids = kcs.identity_centroids(features, image_indices, image_labels)
  _, cluster_of = kcs.kmeans(jnp.asarray(centroids), config.num_clusters, jax.random.key(config.seed))
  cluster_of = np.asarray(cluster_of)
  check_user_batches(cluster_of, config)
  view_features, mixup = None, None
  if config.probe_views:
    progress_lib.say('hyper', f'backbone features of {config.probe_views} augmented copies of every training image',
                     progress)
    if config.get('probe_mixup'):
      mixup = features_lib.Mixup.of(faces, image_indices, config.probe_mixup)
    splits = [split, *(extra_people.folder_split(d, split.align) for d in config.extra_train_dirs)]
    view_features = features_lib.augmented_features_of_parts(backbone, splits,
                                                             data.AugmentConfig(**config.probe_augment),
                                                             config.probe_views, config.seed, image_indices, mixup,
                                                             progress)
  batches = make_batches(features, faces, image_indices, image_labels, config, cluster_of, identities, spec,
                         view_features=view_features, mixup=mixup)

  centre = features_lib.mean_embedding(features, image_indices) if config.centre_embeddings else None
  if config.method == 'shared_f':
    task = objectives.shared_f_task(spec, features.shape[-1], batches, centre, config.feature_distill_weight,
                                    **objective(config))
  elif config.method == 'hypernetwork':
    task = objectives.hyper_task(make_generator(config), spec, features.shape[-1], batches, centre,
                                 config.feature_distill_weight, config.distill_only_stem,
                                 config.get('tied_feature_head', False), config.get('distill_only_map', False),
                                 **objective(config))
  else:
    raise ValueError(f"unknown method {config.method!r}; expected 'hypernetwork' or 'shared_f'")
  validate = None
  if len(calibration_idx):  # the people kept out of training: their pairs, prepared once, scored as it trains
    validation_pairs = hyper_eval.identity_pairs(features, faces, calibration_idx, config, spec)
    validate = lambda state: hyper_eval.enrol_first_scalars(enrolment_fn(config, state.params), *validation_pairs,
                                                            spec)
  state = train_from_config(task, config, workdir, progress=progress, stage='hyper train', validate=validate,
                            validate_every=config.eval_every, select='auc')
  state, selection = evaluated_state(workdir, state, config.evaluate_checkpoint)
  enrol = enrolment_fn(config, state.params)
  report = {
      'steps': int(state.step),  # the checkpoint this report describes; enrolment loads exactly it
      'selection': selection,
      'training_people': len(identities),  # the identities drawn as users (enough images for enrolment + probes)
      'verifier_params': spec.num_params,
      'verifier_madds': models.count_madds_of(lambda t, x: verifier.apply(t, x, spec),
                                             jnp.zeros(spec.num_params),
                                             jnp.zeros((1, spec.input_size, spec.input_size, spec.in_channels))),
      'backbone': backbone.source,
      'backbone_params': backbone.params,
      'backbone_madds': backbone.madds,
      'verification': {},
  }
  verification = report['verification']
  def report_pairs(name, idx):
    progress_lib.say('hyper eval', f'pairs of the {name}', progress)
    verification[name] = hyper_eval.evaluate_identity_pairs(enrol, features, faces, idx, config, spec)

  if len(test_idx):
    report_pairs('held_out_identities', test_idx)
  if len(calibration_idx):  # training people the generator never saw: where settings are chosen
    progress_lib.say('hyper eval', 'pairs of the validation_identities', progress)
    verification['validation_identities'] = hyper_eval.evaluate_pairs(enrol, *validation_pairs, spec)
  report_pairs('training_identities', image_indices)
  if len(test_idx) and config.identification:
    progress_lib.say('hyper eval', '1:N identification of the held-out identities', progress)
    report['identification'] = hyper_eval.evaluate_identification(enrol, features, faces, test_idx, spec,
                                                                  calibration.CalibrationSet.load(workdir), config)
  for path in config.eval_bins:
    progress_lib.say('hyper eval', f'pairs of {path}', progress)
    images, issame = data.read_pair_images(path)
    embeddings = pairs_lib.pair_set_embeddings(backbone, path, images)
    inputs = edge.verifier_input(images, spec)
    verification[Path(path).stem] = hyper_eval.evaluate_pairs(enrol, embeddings, inputs, issame, spec)
  progress_lib.quiet()
  (workdir / 'report.json').write_text(json.dumps(report, indent=2))
  return report


def enrolment_fn(config, params):
  """jit(embeddings [U, E], inputs [U, s, s, 3]) -> thetas [U, D]: how a run of `config` with `params` enrols users
  from their images' backbone embeddings and f inputs (the generator reads the first, the shared_f floor the second)."""
  if config.get('method', 'hypernetwork') == 'shared_f':
    spec = verifier_spec(config)
    return jax.jit(lambda embeddings, inputs: objectives.shared_f_enrol(params, inputs, spec))
  generator = make_generator(config)
  return jax.jit(lambda embeddings, inputs: generator.apply({'params': params}, embeddings,
                                                           inputs if generator.own_template else None))


def hold_out_calibration(labels: np.ndarray, train_idx: np.ndarray, config) -> tuple[np.ndarray, np.ndarray]:
  """(generator training images, calibration images): `calibration_fraction` of the training identities, at most
  `calibration_images` of their images (a seeded sample), kept out of training to calibrate enrolments."""
  if not config.calibration_fraction:
    return train_idx, np.zeros(0, np.int64)
  keep, held = data.split_identities(labels[train_idx], config.calibration_fraction, config.split_seed + 1)
  held = train_idx[held]
  if len(held) > config.calibration_images:
    held = np.sort(np.random.default_rng(config.seed).choice(held, config.calibration_images, replace=False))
  return train_idx[keep], held


def check_user_batches(cluster_of: np.ndarray, config) -> None:
  """Refuses, before any training step, a run whose user batches cannot be drawn: every batch takes
  `users_per_batch` distinct identities, once KCS starts all of one cluster (cluster_of [I]: each training
  identity's cluster)."""
  if len(cluster_of) < config.users_per_batch:
    raise ValueError(f'users_per_batch={config.users_per_batch} exceeds the {len(cluster_of)} training identities '
                     f'with enough images (enrolment + positives_per_user={config.positives_per_user})')
  largest = np.bincount(cluster_of).max()
  if config.kcs_start < config.total_steps and largest < config.users_per_batch:
    raise ValueError(f'KCS from step {config.kcs_start} needs a cluster of users_per_batch={config.users_per_batch} '
                     f'identities, but the largest of num_clusters={config.num_clusters} over the {len(cluster_of)} '
                     f'training identities holds {largest}: use fewer clusters or fewer users per batch')


def limit_identities(labels: np.ndarray, idx: np.ndarray, max_identities: int, seed: int) -> np.ndarray:
  """The images idx [N] of the first `max_identities` of their identities in a seeded order (0: all of them), so the
  identities of a smaller limit are a subset of a larger one's."""
  people = np.unique(labels[idx])
  if not max_identities or max_identities >= len(people):
    return idx
  return idx[np.isin(labels[idx], np.random.default_rng(seed).permutation(people)[:max_identities])]
