"""The learned quality signal: its targets, its head, degraded templates and the coreset reading it as the norm."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fvjax.data import degrade
from fvjax.eval import sets
from fvjax.models import coreset, count_params
from fvjax.models.quality import QualityHead, with_quality
from fvjax.train import quality_head


def test_identity_targets_are_leave_one_out_cosines_by_hand():
  clean = np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0], [5.0, 5.0]])  # identities 7, 7, 7 and 9 (alone)
  degraded = np.array([[0.0, 1.0], [1.0, 0.0], [-1.0, -1.0], [1.0, 0.0]])
  inputs, targets = quality_head.identity_targets(clean, degraded, np.array([7, 7, 7, 9]))
  s = np.sqrt(0.5)
  others = [np.array([0 + s, 1 + s]), np.array([1 + s, 0 + s]), np.array([1.0, 1.0])]  # unit sums of the others
  others = [o / np.linalg.norm(o) for o in others]
  unit = lambda v: v / np.linalg.norm(v)
  expected = [unit(clean[i]) @ others[i] for i in range(3)] + [unit(degraded[i]) @ others[i] for i in range(3)]
  np.testing.assert_allclose(targets, expected, rtol=1e-6)
  np.testing.assert_array_equal(inputs, np.concatenate([clean[:3], degraded[:3]]).astype(np.float32))


def test_the_head_learns_a_quality_that_its_inputs_carry():
  rng = np.random.default_rng(0)
  features = rng.normal(size=(512, 16)).astype(np.float32)
  targets = 0.2 + 0.6 * (features[:, 0] > 0)  # quality written in one direction of the feature
  params = quality_head.fit(features, targets, hidden=16, steps=300, learning_rate=1e-2)
  predicted = np.asarray(QualityHead(16).apply({'params': params}, features))
  assert np.mean((predicted - targets)**2) < 0.01
  assert count_params(params) == (17 * 16 + 16) + (16 + 1)  # unit feature + log norm -> 16 -> 1


def test_with_quality_sets_the_norm_and_keeps_the_direction():
  x = jnp.array([[3.0, 4.0], [0.0, 0.0]])
  np.testing.assert_allclose(with_quality(x, jnp.array([0.5, 0.7])), [[0.3, 0.4], [0.0, 0.0]], rtol=1e-6)


def test_learned_quality_coreset_is_the_norm_coreset_on_requalified_features():
  rng = np.random.default_rng(1)
  features = jnp.asarray(rng.normal(size=(2, 7, 16)) * rng.uniform(1, 3, (2, 7, 1)), jnp.float32)
  mask = jnp.asarray(np.arange(7) < np.array([[7], [4]]))
  learned = coreset.CoresetAggregator(coreset_size=3, num_heads=4, quality='learned', quality_hidden=8)
  params = learned.init({'params': jax.random.key(0)}, features, mask)['params']
  plain = coreset.CoresetAggregator(coreset_size=3, num_heads=4)
  plain_params = {k: v for k, v in params.items() if k != 'quality_head'}
  q = QualityHead(8).apply({'params': params['quality_head']}, features)
  expected = plain.apply({'params': plain_params}, with_quality(features, q), mask).descriptor
  np.testing.assert_allclose(learned.apply({'params': params}, features, mask).descriptor, expected, atol=1e-6)
  weighted = sets.quality_weighted_fn(QualityHead(8), params['quality_head'])(features, mask)
  np.testing.assert_allclose(weighted, coreset.norm_weighted_pool(with_quality(features, q), mask), atol=1e-6)
  with pytest.raises(ValueError, match="quality must be 'norm' or 'learned'"):
    coreset.CoresetAggregator(quality='nrom').init({'params': jax.random.key(0)}, features)


def test_mixed_quality_moves_the_stated_share_of_each_template():
  protocol = sets.TemplateProtocol(members=(np.arange(4), np.arange(4, 5), np.arange(5, 11)),
                                   pairs=np.array([[0, 1], [1, 2]]), issame=np.array([True, False]))
  mixed = sets.mixed_quality(protocol, 0.5, 100, seed=3)
  for before, after in zip(protocol.members, mixed.members):
    moved = after >= 100
    assert moved.sum() == int(np.floor(0.5 * len(before) + 0.5))  # 2 of 4, 1 of 1, 3 of 6
    np.testing.assert_array_equal(np.where(moved, after - 100, after), before)  # the same faces, degraded
  again = sets.mixed_quality(protocol, 0.5, 100, seed=3)
  assert all(np.array_equal(a, b) for a, b in zip(mixed.members, again.members))
  assert mixed.pairs is protocol.pairs and all(np.array_equal(a, b) for a, b in zip(
      sets.mixed_quality(protocol, 0.0, 100, seed=3).members, protocol.members))


def test_random_degradations_are_seeded_and_damage_the_face():
  rng = np.random.default_rng(0)
  face = np.clip(rng.normal(128, 60, (112, 112, 3)), 0, 255).astype(np.uint8)
  first = degrade.random_degradation(face, np.random.default_rng([0, 5]))
  np.testing.assert_array_equal(first, degrade.random_degradation(face, np.random.default_rng([0, 5])))
  for degradation in degrade.MIXED_DEGRADATIONS:
    for strength in degradation.strengths:
      damaged = degradation.apply(face, strength).astype(float)
      assert damaged.shape == face.shape and np.abs(damaged - face).mean() > 10, (degradation.name, strength)
  near = degrade.jpeg(face, 95).astype(float)
  assert np.abs(near - face).mean() < np.abs(degrade.jpeg(face, 4).astype(float) - face).mean()
  kinds = {tuple(degrade.random_degradation(face, np.random.default_rng([0, i])).ravel()[:64]) for i in range(40)}
  assert len(kinds) >= 8  # different degradations and strengths across images


@pytest.mark.slow
def test_set_quality_runs_keep_the_fitted_head_frozen_and_agree_with_the_coreset_reports(tmp_path):
  import json

  import ml_collections

  from fvjax import backbones, cli
  from fvjax.eval import set_quality
  from fvjax.train import coreset
  from fvjax.train.features import backbone_features, degraded_features

  config = cli.load_config('experiments/set_quality_celeba_cpu.py', [
      f'coreset.data_dir={cli.DEMO_DATA}', 'coreset.align=never', 'coreset.total_steps=2', 'coreset.eval_every=1',
      'coreset.checkpoint_every=1', 'coreset.sets_per_batch=4', 'coreset.max_set_size=5',
      'coreset.quality_head.steps=20', 'coreset.selection_far=0.1', 'shares=(0.0, 0.5)', 'protocol_seeds=(1,)',
      'pose_dir='])
  report = set_quality.run(config, tmp_path, progress=False)
  assert set(report['protocols']) == {'clean', '50% degraded'}
  for share in report['protocols'].values():
    assert set(share) == set(set_quality.DESCRIPTORS)
  # Share 0 with seed 1 is the coreset run's own test protocol (seed + 1): the same figures.
  own = json.loads((tmp_path / 'norm' / 'report.json').read_text())['sets']
  for name, ours in (('coreset', 'coreset_norm'), ('mean_pooling', 'mean_pooling')):
    assert report['protocols']['clean'][ours]['auc'] == [pytest.approx(own[name]['auc'])]
  # The learned run's head is exactly the one fitted on its training identities: frozen through training.
  base = ml_collections.ConfigDict(config.coreset.to_dict())
  backbone = backbones.load(base.backbone)
  split = backbone.data_split(base)
  features, faces = backbone_features(backbone, split)
  degraded, _ = degraded_features(backbone, split, base.seed)
  fit_idx, _, _ = coreset.identity_split(faces, split, base.validation_fraction, base.seed)
  inputs, targets = quality_head.identity_targets(features[fit_idx, 0], degraded[fit_idx, 0], faces.labels[fit_idx])
  fitted = quality_head.fit(inputs, targets, base.aggregator.quality_hidden, seed=base.seed, **base.quality_head)
  kept = coreset.load_aggregator(tmp_path / 'learned')[1]['quality_head']
  for a, b in zip(jax.tree.leaves(fitted), jax.tree.leaves(kept)):
    np.testing.assert_array_equal(a, b)
  assert report['params']['coreset_learned'] == report['params']['coreset_norm'] + report['params']['quality_head']
  assert '| coreset_learned |' in set_quality.format_table(report)


def test_frontal_profile_templates_swap_half_of_each_template_for_profiles_of_the_same_person():
  labels = np.repeat([4, 9], 14)
  profile = np.tile(np.arange(14) >= 10, 2)  # as CFP: 10 frontal, then 4 profile faces per person
  frontal, mixed = sets.frontal_profile_templates(labels, profile, size=4, seed=0)
  assert len(frontal.members) == len(mixed.members) == 4 and np.array_equal(frontal.pairs, mixed.pairs)
  np.testing.assert_array_equal(frontal.issame, [True, False, False, False, False, True])
  for f, m in zip(frontal.members, mixed.members):
    assert not profile[f].any() and profile[m].sum() == 2 and set(m[:2]) <= set(f)
    assert len(set(labels[f]) | set(labels[m])) == 1
  for kind in (frontal, mixed):
    every = np.concatenate(kind.members)
    assert len(every) == len(np.unique(every))  # disjoint templates
  with pytest.raises(ValueError, match='identity 9 has 10 frontal and 3 profile faces'):
    sets.frontal_profile_templates(labels[:-1], profile[:-1], size=4, seed=0)
