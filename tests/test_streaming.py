"""Training data streamed from disk: the backbone feature cache, KCS centroids in chunks, per-host hyper and
coreset batches."""

import dataclasses
import json

import ml_collections
import numpy as np
import pytest

from fvjax import backbones, cli, data, edge
from fvjax.eval import verification
from fvjax.models import verifier
from fvjax.train import features as features_lib
from fvjax.train import coreset, extra_people, hyper, kcs


@pytest.fixture(scope='module')
def backbone_run(tmp_path_factory):
  """A 1-step MobileFaceNet run on the shipped AT&T faces (its features are what is under test, not its accuracy)."""
  root = tmp_path_factory.mktemp('streaming')
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr('fvjax.data.folder.DEFAULT_CACHE', root / 'fvjax_cache')
    cli.main(['train', '--config', 'experiments/seesaw_celeba_cpu.py', '--workdir', str(root / 'backbone'),
              '--set', f'data_dir={cli.DEMO_DATA}', '--set', 'align=never', '--set', 'total_steps=1', '--set', 'batch_size=8',
              '--set', 'eval_pairs=20', '--set', 'backbone=mobilefacenet'])
    yield root / 'backbone'


def features_of(run):
  """The cached features of a backbone run on its own data."""
  backbone = backbones.load(run)
  return features_lib.backbone_features(backbone, backbone.data_split(ml_collections.ConfigDict({'data_dir': ''})))


def test_features_are_cached_memory_mapped_and_equal_flip_embeddings(backbone_run):
  features, faces = features_of(backbone_run)
  path = backbone_run / 'features' / 'features.npy'
  assert isinstance(features, np.memmap) and features.shape == (len(faces), 2, 512)
  rows = np.array([0, 17, 5, 200])
  backbone, variables, _, _ = backbones.load_trained(backbone_run)
  expected = verification.embed_images(verification.backbone_embed_fn(backbone, variables), data.decode_all(faces, rows))
  np.testing.assert_allclose(features_lib.embeddings(features, rows), expected, atol=1e-5)

  stamp = path.stat().st_mtime_ns
  features_of(backbone_run)
  assert path.stat().st_mtime_ns == stamp  # reused

  key = backbone_run / 'features' / 'features.key.json'
  key.write_text(json.dumps({**json.loads(key.read_text()), 'backbone_step': -1}))  # another backbone step
  again, _ = features_of(backbone_run)
  assert path.stat().st_mtime_ns != stamp
  np.testing.assert_array_equal(again, features)
  assert not list(path.parent.glob('*.partial.npy'))  # the temporary file became the cache


def test_identity_centroids_by_hand():
  rng = np.random.default_rng(0)
  features = rng.normal(size=(6, 2, 4)).astype(np.float32)
  image_indices, labels = np.array([5, 0, 2, 3]), np.array([7, 3, 7, 3])
  identities, centroids = kcs.identity_centroids(features, image_indices, labels)
  unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)
  emb = unit(features.sum(1))
  np.testing.assert_array_equal(identities, [3, 7])
  np.testing.assert_allclose(centroids, unit(np.stack([emb[0] + emb[3], emb[5] + emb[2]])), rtol=1e-5)


def test_hyper_batches_are_step_indexed_and_split_over_hosts(backbone_run):
  features, faces = features_of(backbone_run)
  config = ml_collections.ConfigDict({'users_per_batch': 4, 'positives_per_user': 2, 'seed': 3, 'kcs_start': 2,
                                      'norm_penalty': 0.5, 'norm_penalty_start': 1, 'total_steps': 4,
                                      'decode_threads': 2, 'probe_augment': {'flip': 0.0, 'crop_padding': 0}})
  identities = np.unique(faces.labels)
  cluster_of = np.arange(len(identities)) % 2
  spec = verifier.VerifierSpec()

  def batches(hosts, host, start):
    return list(hyper.make_batches(features, faces, np.arange(len(faces)), faces.labels, config, cluster_of,
                                   identities, spec, hosts=hosts, host=host)(start))

  single = batches(1, 0, 0)
  assert len(single) == 4
  for later, earlier in zip(batches(1, 0, 2), single[2:]):  # batch s depends on s alone: resuming repeats nothing
    for k in later:
      np.testing.assert_array_equal(later[k], earlier[k])
  halves = zip(batches(2, 0, 0), batches(2, 1, 0))
  for step, (first, second) in enumerate(halves):
    for k in single[step]:
      np.testing.assert_array_equal(np.concatenate([first[k], second[k]]), single[step][k])
  np.testing.assert_array_equal(single[3]['probe_user'], np.repeat(np.arange(4), 2))
  np.testing.assert_array_equal([b['norm_weight'][0] for b in single], [0.0, 0.5, 0.5, 0.5])
  probes = single[0]['probes']
  assert probes.shape == (8, 64, 64, 3) and -1 <= probes.min() and probes.max() <= 1
  # Probe augmentation draws after the users and images: flip=1 gives the same probes, mirrored (resizing to f's
  # input commutes with a horizontal flip); the enrolment embeddings stay the clean images'.
  mirrored = ml_collections.ConfigDict({**config.to_dict(), 'probe_augment': {'flip': 1.0, 'crop_padding': 0}})
  flipped = list(hyper.make_batches(features, faces, np.arange(len(faces)), faces.labels, mirrored, cluster_of,
                                    identities, spec)(0))
  for plain, mirror in zip(single, flipped):
    np.testing.assert_allclose(mirror['probes'], plain['probes'][:, :, ::-1], atol=1e-6)
    np.testing.assert_array_equal(mirror['enrol'], plain['enrol'])
  # Random flips and crops: the hosts' blocks still assemble the single-host batch, augmentation included.
  augmented = ml_collections.ConfigDict({**config.to_dict(), 'probe_augment': {'flip': 0.5, 'crop_padding': 4}})
  one_host = list(hyper.make_batches(features, faces, np.arange(len(faces)), faces.labels, augmented, cluster_of,
                                     identities, spec)(0))
  blocks = [list(hyper.make_batches(features, faces, np.arange(len(faces)), faces.labels, augmented, cluster_of,
                                    identities, spec, hosts=2, host=h)(0)) for h in (0, 1)]
  for step, batch in enumerate(one_host):
    np.testing.assert_array_equal(np.concatenate([blocks[0][step]['probes'], blocks[1][step]['probes']]),
                                  batch['probes'])
  assert not np.allclose(one_host[0]['probes'], single[0]['probes'])
  # Each enrolment embedding is one image's: its identity gives the user's K-means cluster. From kcs_start on,
  # a batch's users are distinct identities of one cluster.
  every_embedding = features_lib.embeddings(features, np.arange(len(faces)))
  def clusters(batch):
    rows = [np.flatnonzero((every_embedding == e).all(axis=1))[0] for e in batch['enrol']]
    users = faces.labels[rows]
    assert len(set(users)) == len(users)
    return set(cluster_of[np.searchsorted(identities, users)])
  longer = ml_collections.ConfigDict({**config.to_dict(), 'total_steps': 12})
  long_run = list(hyper.make_batches(features, faces, np.arange(len(faces)), faces.labels, longer, cluster_of,
                                     identities, spec)(0))
  assert all(len(clusters(b)) == 1 for b in long_run[2:])
  assert any(len(clusters(b)) > 1 for b in long_run[:2])  # before kcs_start: users from anywhere


def test_coreset_batches_are_step_indexed_split_over_hosts_and_drawn_within_one_identity():
  rng = np.random.default_rng(0)
  features = rng.normal(size=(40, 2, 8)).astype(np.float32)
  image_indices = np.arange(4, 40)  # rows 0..3 are not training images
  image_classes = np.arange(len(image_indices)) % 3
  config = ml_collections.ConfigDict({'sets_per_batch': 6, 'max_set_size': 5, 'seed': 1})

  def batches(hosts, host, start, count=3):
    stream = coreset.make_batches(features, image_indices, image_classes, config, hosts=hosts, host=host)(start)
    return [next(stream) for _ in range(count)]

  single = batches(1, 0, 0)
  for later, earlier in zip(batches(1, 0, 1, count=2), single[1:]):  # batch s depends on s alone
    for k in later:
      np.testing.assert_array_equal(later[k], earlier[k])
  for step, blocks in enumerate(zip(*(batches(3, h, 0) for h in range(3)))):
    for k in single[step]:
      np.testing.assert_array_equal(np.concatenate([b[k] for b in blocks]), single[step][k])
  with pytest.raises(ValueError, match='sets_per_batch 6 does not split over 4 hosts'):
    batches(4, 0, 0)

  for b in single:
    sizes = b['mask'].sum(1)
    assert b['features'].shape == (6, 5, 8) and sizes.min() >= 1 and sizes.max() <= 5
    np.testing.assert_array_equal(b['mask'], np.arange(5) < sizes[:, None])  # members first, then padding
    assert not b['features'][~b['mask']].any()
    for set_features, size, label in zip(b['features'], sizes, b['label']):
      own = features[image_indices[image_classes == label]].reshape(-1, 8)  # images and mirrors of the identity
      for member in set_features[:size]:
        assert (own == member).all(axis=1).any()


def test_probe_views_are_fixed_augmented_copies_with_their_own_backbone_embedding(backbone_run):
  features, faces = features_of(backbone_run)
  backbone = backbones.load(backbone_run)
  split = backbone.data_split(ml_collections.ConfigDict({'data_dir': ''}))
  augmentation = data.AugmentConfig(flip=0.5, crop_padding=8, contrast=0.3, brightness=0.3)
  view_features, _ = features_lib.augmented_features(backbone, split, augmentation, 3, seed=5)
  assert isinstance(view_features, np.memmap) and view_features.shape == (len(faces), 3, 512)
  # The oracle: the backbone itself on copies made here, one by one, with data.augment and the documented seeds.
  net, variables, _, _ = backbones.load_trained(backbone_run)
  embed = verification.backbone_embed_fn(net, variables)
  rows, views = np.array([3, 3, 120, 7]), np.array([0, 2, 1, 1])
  copies = np.stack([data.augment(data.decode_all(faces, [r])[0], np.random.default_rng([5, r, v]), augmentation)
                     for r, v in zip(rows, views)])
  np.testing.assert_allclose(features_lib.view_embeddings(view_features, rows, views),
                             verification.embed_images(embed, copies, flip=False), atol=1e-5)
  assert not np.allclose(view_features[3, 0], view_features[3, 2])
  # Copies of some images only (a run's training images): the same values there, NaN (loud if ever read) elsewhere.
  some, _ = features_lib.augmented_features(backbone, split, augmentation, 3, seed=5, rows=np.array([120, 3, 7]))
  np.testing.assert_allclose(some[[3, 7, 120]], view_features[[3, 7, 120]], atol=1e-5)
  assert np.isnan(np.delete(np.asarray(some), [3, 7, 120], axis=0)).all()
  # Each variant keeps its own file: asking again for every image's copies reads the first cache back.
  assert len(list((backbone_run / 'features').glob('augmented_5_*.npy'))) == 2
  stamps = {f: f.stat().st_mtime_ns for f in (backbone_run / 'features').glob('augmented_5_*.npy')}
  again, _ = features_lib.augmented_features(backbone, split, augmentation, 3, seed=5)
  np.testing.assert_array_equal(again, view_features)
  assert {f: f.stat().st_mtime_ns for f in (backbone_run / 'features').glob('augmented_5_*.npy')} == stamps

  config = ml_collections.ConfigDict({'users_per_batch': 4, 'positives_per_user': 2, 'seed': 5, 'kcs_start': 9,
                                      'norm_penalty': 0.0, 'norm_penalty_start': 9, 'total_steps': 3,
                                      'decode_threads': 2, 'probe_views': 3,
                                      'probe_augment': dataclasses.asdict(augmentation)})
  identities = np.unique(faces.labels)
  spec = verifier.VerifierSpec()
  def batches(hosts=None, host=None):
    return list(hyper.make_batches(features, faces, np.arange(len(faces)), faces.labels, config,
                                   np.zeros(len(identities), int), identities, spec, hosts=hosts, host=host,
                                   view_features=view_features)(0))
  single = batches()
  all_views = features_lib.view_embeddings(view_features, np.repeat(np.arange(len(faces)), 3),
                                           np.tile(np.arange(3), len(faces))).reshape(len(faces), 3, -1)
  drawn = set()
  for batch in single:
    for probe, target in zip(batch['probes'], batch['probe_embed']):
      # Each probe is f's input of the copy whose embedding is its target.
      row, view = map(int, np.argwhere(np.all(np.isclose(all_views, target, atol=1e-6), axis=-1))[0])
      copy = features_lib.augmented_view(data.decode_all(faces, [row])[0], row, view, 5, augmentation)
      np.testing.assert_allclose(probe, edge.verifier_input(copy[None], spec)[0], atol=1e-6)
      drawn.add(view)
  assert drawn == {0, 1, 2}
  halves = zip(batches(2, 0), batches(2, 1))  # the hosts' blocks are the single-host batch, copies included
  for step, (first, second) in enumerate(halves):
    for k in single[step]:
      np.testing.assert_array_equal(np.concatenate([first[k], second[k]]), single[step][k])


def test_probe_copies_of_added_people_are_seeded_by_their_row_in_the_whole_training_data(backbone_run):
  _, faces = features_of(backbone_run)
  backbone = backbones.load(backbone_run)
  split = backbone.data_split(ml_collections.ConfigDict({'data_dir': ''}))
  augmentation = data.AugmentConfig(flip=0.5, crop_padding=8, contrast=0.3, brightness=0.3)
  n = len(faces)
  # The main data, then the same folder added as more people (extra_people appends folders so): 2n images.
  splits = [split, extra_people.folder_split(split.data_dir, split.align)]
  rows = np.array([3, 7, n + 3, n + 120])
  copies = features_lib.augmented_features_of_parts(backbone, splits, augmentation, 2, seed=5, rows=rows)
  assert copies.shape == (2 * n, 2, 512)
  # The oracle: the backbone on copies made here with data.augment, seeded by (seed, row in the whole, view), the
  # view make_batches draws for that row.
  net, variables, _, _ = backbones.load_trained(backbone_run)
  embed = verification.backbone_embed_fn(net, variables)
  for view in range(2):
    made = np.stack([data.augment(data.decode_all(faces, [r % n])[0], np.random.default_rng([5, r, view]),
                                  augmentation) for r in rows])
    np.testing.assert_allclose(features_lib.view_embeddings(copies, rows, np.full(len(rows), view)),
                               verification.embed_images(embed, made, flip=False), atol=1e-5)
  assert not np.allclose(copies[3], copies[n + 3])  # the same image at another row of the whole: other copies
  assert np.isnan(np.delete(copies, rows, axis=0)).all()
  # A part none of whose images is copied holds NaN only.
  main_only = features_lib.augmented_features_of_parts(backbone, splits, augmentation, 2, seed=5, rows=rows[:2])
  np.testing.assert_array_equal(main_only[rows[:2]], copies[rows[:2]])
  assert np.isnan(main_only[n:]).all()
  # The main data alone (no added folder) stays a memmap, streamed from disk as before, with the same copies.
  alone = features_lib.augmented_features_of_parts(backbone, splits[:1], augmentation, 2, seed=5, rows=rows[:2])
  assert isinstance(alone, np.memmap)
  np.testing.assert_array_equal(alone, main_only[:n])


def test_probe_mixup_blends_a_partner_into_each_copy_and_targets_the_blend(backbone_run):
  features, faces = features_of(backbone_run)
  backbone = backbones.load(backbone_run)
  split = backbone.data_split(ml_collections.ConfigDict({'data_dir': ''}))
  augmentation = data.AugmentConfig(flip=0.5, crop_padding=8)
  rows = np.array([40, 3, 39, 55, 7, 8, 33, 120, 3])  # people 11 (3, 39, 55) and 30 (7, 8, 33), and two others
  mixup = features_lib.Mixup.of(faces, rows, 0.4)
  np.testing.assert_array_equal(mixup.rows, [3, 7, 8, 33, 39, 40, 55, 120])
  mixed, _ = features_lib.augmented_features(backbone, split, augmentation, 2, seed=5, rows=rows, mixup=mixup)
  plain, _ = features_lib.augmented_features(backbone, split, augmentation, 2, seed=5, rows=rows)
  # The oracle: blends made here from the documented draws (the augmentation, then a partner among the rows and
  # its share, from the one generator seeded by (seed, row, view)), through the backbone itself.
  net, variables, _, _ = backbones.load_trained(backbone_run)
  embed = verification.backbone_embed_fn(net, variables)
  decode = lambda row: data.decode_all(faces, [row])[0]
  blends, shares = [], []
  for row, view in ((3, 0), (3, 1), (40, 1), (120, 0)):
    rng = np.random.default_rng([5, row, view])
    copy = data.augment(decode(row), rng, augmentation)
    partner = decode(mixup.rows[rng.integers(len(mixup.rows))])
    shares.append(rng.uniform(0.0, 0.4))
    blends.append(np.rint((1 - shares[-1]) * copy.astype(np.float64) + shares[-1] * partner).astype(np.uint8))
  np.testing.assert_allclose(features_lib.view_embeddings(mixed, np.array([3, 3, 40, 120]), np.array([0, 1, 1, 0])),
                             verification.embed_images(embed, np.stack(blends), flip=False), atol=1e-5)
  assert all(0.0 <= share <= 0.4 for share in shares) and max(shares) > 0.05
  assert not np.allclose(mixed[3], plain[3])  # a variant of its own, cached beside the unmixed copies
  keys = [json.loads(k.read_text()) for k in (backbone_run / 'features').glob('augmented_5_*.key.json')]
  assert {k.get('mixup') for k in keys} >= {0.4, None}

  # A batch's probes are f's inputs of the very blends whose embeddings are their targets.
  config = ml_collections.ConfigDict({'users_per_batch': 2, 'positives_per_user': 2, 'seed': 5, 'kcs_start': 9,
                                      'norm_penalty': 0.0, 'norm_penalty_start': 9, 'total_steps': 2,
                                      'decode_threads': 2, 'probe_views': 2,
                                      'probe_augment': dataclasses.asdict(augmentation)})
  image_indices = np.unique(rows)
  labels = faces.labels[image_indices]
  identities = np.array([11, 30])  # the users: the people with an enrolment and two probes among the rows
  assert all((labels == i).sum() == 3 for i in identities)
  spec = verifier.VerifierSpec()
  for batch in hyper.make_batches(features, faces, image_indices, labels, config, np.zeros(len(identities), int),
                                  identities, spec, view_features=mixed, mixup=mixup)(0):
    for probe, target in zip(batch['probes'], batch['probe_embed']):
      matches = [(row, view) for row in image_indices for view in range(2)
                 if np.allclose(features_lib.view_embeddings(mixed, np.array([row]), np.array([view]))[0], target,
                                atol=1e-6)]
      row, view = matches[0]
      blend = features_lib.augmented_view(decode(row), row, view, 5, augmentation, mixup)
      np.testing.assert_allclose(probe, edge.verifier_input(blend[None], spec)[0], atol=1e-6)
