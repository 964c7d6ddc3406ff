"""FaceCoresetNet: selection, invariances, gradients, bad input, and the template protocol."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fvjax.eval import sets
from fvjax.models import count_params
from fvjax.models.coreset import (CoresetAggregator, check_sets, farthest_point_sample, mean_pool, norm_encoding,
                                  norm_weighted_pool, quality_distance)

SMALL = CoresetAggregator(coreset_size=3, num_heads=4)


def random_sets(b=3, t=9, c=24, seed=0):
  rng = np.random.default_rng(seed)
  unit = rng.normal(size=(b, t, c))
  unit /= np.linalg.norm(unit, axis=-1, keepdims=True)
  return jnp.asarray(unit * rng.uniform(5, 30, (b, t, 1)), jnp.float32)


def init(model, features, mask=None):
  return model.init({'params': jax.random.key(1)}, features, mask)


def brute_force_fps(x: np.ndarray, k: int, gamma: float) -> list[int]:
  """Farthest-point sampling by definition: distance to the coreset = min over its members, recomputed."""
  norms = np.linalg.norm(x, axis=1)
  unit = x / norms[:, None]
  picks = [int(np.argmax(norms))]
  while len(picks) < min(k, len(x)):
    d = np.array([min(norms[j]**gamma * (1 - unit[j] @ unit[p]) / 2 for p in picks) for j in range(len(x))])
    d[picks] = -np.inf
    picks.append(int(np.argmax(d)))
  return picks


def test_quality_distance_and_norm_encoding_by_hand():
  unit = jnp.array([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])
  d = quality_distance(unit, jnp.array([[2.0, 0.0]]), jnp.array([[4.0, 9.0, 16.0]]), jnp.float32(0.5))
  np.testing.assert_allclose(d, [[0.0, 3 * 0.5, 4 * 1.0]], rtol=1e-6)  # n^0.5 * (1 - cos) / 2
  enc = norm_encoding(jnp.array([0.25]), 4)
  # i = 0, 1 -> frequency 1; i = 2, 3 -> 10000^(2/4) = 100; even i: sin, odd i: cos
  a = 2 * math.pi * 0.25
  np.testing.assert_allclose(enc[0], [math.sin(a), math.cos(a), math.sin(a / 100), math.cos(a / 100)], atol=1e-6)


def test_inference_selection_equals_brute_force_fps():
  x = random_sets(b=4, t=12)
  for gamma in (0.01, 1.0):
    selection, picked = farthest_point_sample(x, jnp.ones(x.shape[:2], bool), 5, jnp.float32(gamma))
    assert picked.all()
    for b in range(x.shape[0]):
      assert np.argmax(selection[b], axis=-1).tolist() == brute_force_fps(np.asarray(x[b], np.float64), 5, gamma)
      np.testing.assert_array_equal(np.sort(np.asarray(selection[b]), axis=-1)[:, -1], 1.0)  # exact one-hot


def test_k_at_least_set_size_selects_every_member_once():
  x = random_sets(b=2, t=4)
  x = x.at[0, 3].set(x[0, 1])  # an exact duplicate must still be picked once, not twice
  mask = jnp.array([[True] * 4, [True, True, False, False]])
  selection, picked = farthest_point_sample(x, mask, 6, jnp.float32(0.01))
  np.testing.assert_array_equal(picked, [[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]])
  counts = np.asarray(jnp.sum(selection, axis=1))
  np.testing.assert_array_equal(counts, [[1, 1, 1, 1], [1, 1, 0, 0]])
  assert float(jnp.sum(selection[:, ~np.asarray(picked[0])])) == 0.0  # missing picks select nothing


def test_descriptor_is_order_invariant():
  x = random_sets()
  variables = init(SMALL, x)
  out = SMALL.apply(variables, x)
  perm = np.random.default_rng(3).permutation(x.shape[1])
  shuffled = SMALL.apply(variables, x[:, perm])
  np.testing.assert_allclose(shuffled.descriptor, out.descriptor, atol=1e-5)
  np.testing.assert_allclose(shuffled.quality, out.quality, rtol=1e-5)
  np.testing.assert_allclose(jnp.linalg.norm(out.descriptor, axis=-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize('valid', [2, 5, 9])  # below, at and above K = 3
def test_masked_padding_leaves_descriptor_unchanged(valid):
  x = random_sets(b=1, t=valid)
  variables = init(SMALL, x)
  alone = SMALL.apply(variables, x)
  padding = 100.0 * jnp.ones((1, 7, x.shape[-1]))  # large norms: would be picked first if not masked
  padded = jnp.concatenate([x[:, :2], padding, x[:, 2:]], axis=1)
  mask = jnp.concatenate([jnp.ones((1, 2)), jnp.zeros((1, 7)), jnp.ones((1, valid - 2))], axis=1).astype(bool)
  out = SMALL.apply(variables, padded, mask)
  np.testing.assert_allclose(out.aggregate, alone.aggregate, rtol=1e-5, atol=1e-5)
  assert int(out.picked.sum()) == min(3, valid)


def test_gradients_reach_gamma_and_attention_through_gumbel_selection():
  x = random_sets()
  variables = init(SMALL, x)
  target = jax.random.normal(jax.random.key(5), (x.shape[0], x.shape[-1]))

  def loss(params):
    out = SMALL.apply({'params': params}, x, train=True, rngs={'gumbel': jax.random.key(2),
                                                               'dropout': jax.random.key(3)})
    return jnp.sum((out.descriptor - target)**2)

  grads = jax.grad(loss)(variables['params'])
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  assert abs(float(grads['gamma'])) > 0  # only through the straight-through picks
  for block in ('self_attention', 'cross_attention'):
    assert float(jnp.abs(grads[block]['query']['kernel']).sum()) > 0


def test_training_picks_are_one_hot_and_follow_the_gumbel_stream():
  x = random_sets(b=2, t=30)
  mask = jnp.ones(x.shape[:2], bool)
  fps = jax.jit(farthest_point_sample, static_argnums=2)
  a, _ = fps(x, mask, 3, jnp.float32(0.01), jax.random.key(0))
  b, _ = fps(x, mask, 3, jnp.float32(0.01), jax.random.key(0))
  np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(jnp.sum(a, axis=-1), 1.0, atol=1e-6)
  np.testing.assert_allclose(jnp.max(a, axis=-1), 1.0, atol=1e-6)
  many = [np.argmax(fps(x, mask, 3, jnp.float32(0.01), jax.random.key(s))[0], -1)
          for s in range(20)]
  assert len({m.tobytes() for m in many}) > 1  # training picks are stochastic


def test_parameter_count_equals_the_reference_modules():
  # used reference modules: 2 nn.MultiheadAttention(512) (in-proj 3*512*512+3*512, out 512*512+512),
  # 3 LayerNorm(512) (two in the block, one on the norm encoding) and gamma.
  model = CoresetAggregator()
  params = model.init({'params': jax.random.key(0)}, jnp.ones((1, 4, 512)))['params']
  assert count_params(params) == 2 * (4 * 512 * 512 + 4 * 512) + 3 * 2 * 512 + 1 == 2_104_321


def test_bad_sets_are_refused_with_a_clear_message():
  good = np.asarray(random_sets(b=2, t=3))
  check_sets(good)
  with pytest.raises(ValueError, match='empty set'):
    check_sets(np.zeros((2, 0, 24)))
  with pytest.raises(ValueError, match=r'sets \[1\] have every member masked'):
    check_sets(good, np.array([[1, 0, 0], [0, 0, 0]], bool))
  nan = good.copy()
  nan[1, 2, 5] = np.nan
  with pytest.raises(ValueError, match='set 1, member 2: feature holds NaN'):
    check_sets(nan)
  check_sets(nan, np.array([[1, 1, 1], [1, 1, 0]], bool))  # a NaN in padding is ignored
  with pytest.raises(ValueError, match='must be features'):
    check_sets(good[0])
  with pytest.raises(ValueError, match='B, T >= 1'):
    SMALL.init({'params': jax.random.key(0)}, jnp.zeros((1, 0, 16)))
  with pytest.raises(ValueError, match='every member masked'):
    sets.template_descriptors(jax.jit(mean_pool), good.reshape(-1, 24), [np.array([0, 1]), np.array([], int)])


def test_pooling_baselines_by_hand():
  x = jnp.array([[[3.0, 0.0], [0.0, 1.0], [9.0, 9.0]]])
  mask = jnp.array([[True, True, False]])
  np.testing.assert_allclose(mean_pool(x, mask), [[1 / math.sqrt(2), 1 / math.sqrt(2)]], rtol=1e-6)
  np.testing.assert_allclose(norm_weighted_pool(x, mask), [[3 / math.sqrt(10), 1 / math.sqrt(10)]], rtol=1e-6)


def test_identity_templates_are_disjoint_and_pairs_complete():
  labels = np.repeat(np.arange(5), 12)
  protocol = sets.identity_templates(labels, templates_per_identity=3, size_range=(2, 4), seed=0)
  all_members = np.concatenate(protocol.members)
  assert len(all_members) == len(np.unique(all_members))  # disjoint
  assert all(2 <= len(m) <= 4 for m in protocol.members) and len(protocol.members) == 15
  owner = np.array([labels[m[0]] for m in protocol.members])
  assert all((labels[m] == labels[m[0]]).all() for m in protocol.members)
  assert len(protocol.pairs) == 15 * 14 // 2
  np.testing.assert_array_equal(protocol.issame, owner[protocol.pairs[:, 0]] == owner[protocol.pairs[:, 1]])
  assert protocol.issame.sum() == 5 * 3


def test_read_ijb_meta_layout(tmp_path):
  (tmp_path / 'ijbc_face_tid_mid.txt').write_text('1.jpg 7 100\n2.jpg 7 101\n3.jpg 9 102\n4.jpg 11 103\n')
  (tmp_path / 'ijbc_template_pair_label.txt').write_text('7 9 0\n7 11 1\n')
  names, media, protocol = sets.read_ijb(tmp_path, 'IJBC')
  assert names.tolist() == ['1.jpg', '2.jpg', '3.jpg', '4.jpg'] and media.tolist() == [100, 101, 102, 103]
  assert [m.tolist() for m in protocol.members] == [[0, 1], [2], [3]]
  np.testing.assert_array_equal(protocol.pairs, [[0, 1], [0, 2]])
  np.testing.assert_array_equal(protocol.issame, [False, True])
  (tmp_path / 'ijbb_face_tid_mid.txt').write_text('1.jpg 7 100\n')
  (tmp_path / 'ijbb_template_pair_label.txt').write_text('7 8 1\n')
  with pytest.raises(ValueError, match=r'absent from .*: \[8\]'):
    sets.read_ijb(tmp_path, 'IJBB')
  with pytest.raises(FileNotFoundError, match='insightface IJB meta layout'):
    sets.read_ijb(tmp_path / 'missing', 'IJBB')


def smooth_face(seed: int) -> np.ndarray:
  """A smooth synthetic 112x112 'face' (blurred noise), so bilinear resampling errors stay small."""
  from PIL import Image, ImageFilter
  noise = np.random.default_rng(seed).integers(0, 256, (28, 28, 3), dtype=np.uint8)
  return np.asarray(Image.fromarray(noise).resize((112, 112), Image.BICUBIC).filter(ImageFilter.GaussianBlur(2)))


def test_ijb_loose_crops_are_aligned_from_their_meta_landmarks(tmp_path):
  from PIL import Image
  from fvjax import align
  (tmp_path / 'meta').mkdir()
  (tmp_path / 'loose_crop').mkdir()
  lines, faces = [], []
  for i, (angle, scale, shift) in enumerate([(0.2, 1.8, (40.0, 30.0)), (-0.35, 1.3, (10.0, 70.0))]):
    face = smooth_face(i)
    # A loose crop: the face under a known similarity (crop pixel -> loose pixel), drawn by PIL's own warp.
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    inverse = np.linalg.inv(rotation)
    loose_from = np.concatenate([inverse, (-inverse @ np.array(shift))[:, None]], 1)  # loose -> crop
    loose = Image.fromarray(face).transform((260, 240), Image.AFFINE, loose_from.ravel().tolist(), Image.BILINEAR)
    loose.save(tmp_path / 'loose_crop' / f'{i}.png')
    points = align.INSIGHTFACE_TEMPLATE @ rotation.T + np.array(shift)
    lines.append(f'{i}.png ' + ' '.join(f'{v:.4f}' for v in points.ravel()) + f' {0.9 - i / 10}')
    faces.append(face)
  (tmp_path / 'meta' / 'ijbc_name_5pts_score.txt').write_text('\n'.join(lines) + '\n')
  ijb = sets.IJBFaces.read(tmp_path, 'IJBC')
  assert ijb.names.tolist() == ['0.png', '1.png'] and np.allclose(ijb.faceness, [0.9, 0.8])
  aligned = ijb.aligned([0, 1])
  centre = (slice(16, 96), slice(16, 96))
  for got, want in zip(aligned, faces):
    assert np.abs(got[centre].astype(float) - want[centre]).mean() < 4.0  # the same face, resampled twice
  assert np.abs(aligned[0][centre].astype(float) - faces[1][centre]).mean() > 10  # and not just any face
  (tmp_path / 'loose_crop' / '1.png').unlink()
  with pytest.raises(FileNotFoundError, match='1.png .line 2 of the landmarks file'):
    ijb.aligned([1])


def test_ijb_templates_evaluate_from_loose_crops_through_a_frozen_backbone(tmp_path, celeba_dir):
  # Real faces in the IJB layout: 3 CelebA people x 2 images, each pasted into a larger loose crop at an offset,
  # their landmarks the template moved by that offset; templates = one per image pair of a person.
  from PIL import Image
  from fvjax import align, backbones
  from fvjax.train import coreset as coreset_training
  (tmp_path / 'meta').mkdir()
  (tmp_path / 'loose_crop').mkdir()
  people = sorted(p for p in celeba_dir.iterdir() if p.is_dir())[:3]
  landmarks, tid_mid = [], []
  for t, person in enumerate(people):
    for j, path in enumerate(sorted(person.iterdir())[:2]):
      canvas = Image.new('RGB', (200, 180), (90, 90, 90))
      canvas.paste(Image.open(path).convert('RGB'), (30 + 10 * j, 40))
      name = f'{t}_{j}.jpg'
      canvas.save(tmp_path / 'loose_crop' / name, quality=95)
      points = align.INSIGHTFACE_TEMPLATE + [30 + 10 * j, 40]
      landmarks.append(f'{name} ' + ' '.join(f'{v:.3f}' for v in points.ravel()) + ' 0.99')
      tid_mid.append(f'{name} {t} {2 * t + j}')
  (tmp_path / 'meta' / 'ijbc_name_5pts_score.txt').write_text('\n'.join(landmarks) + '\n')
  (tmp_path / 'meta' / 'ijbc_face_tid_mid.txt').write_text('\n'.join(tid_mid) + '\n')
  (tmp_path / 'meta' / 'ijbc_template_pair_label.txt').write_text('0 1 0\n0 2 0\n1 2 0\n' * 3 + '0 0 1\n1 1 1\n2 2 1\n')
  report = coreset_training.evaluate_ijb(backbones.load('pretrained:dlib_resnet'), tmp_path, 'IJBC',
                                         sets.pooling_baselines(), tar_method='insightface')
  assert set(report) == {'mean_pooling', 'norm_weighted_pooling'}
  assert report['mean_pooling']['pairs'] == 12 and report['mean_pooling']['auc'] == 1.0  # a strong backbone
  (tmp_path / 'meta' / 'ijbc_face_tid_mid.txt').write_text('\n'.join(reversed(tid_mid)) + '\n')
  with pytest.raises(ValueError, match='list different images'):
    coreset_training.evaluate_ijb(backbones.load('pretrained:dlib_resnet'), tmp_path, 'IJBC', {}, 'insightface')


def test_template_descriptors_match_unbatched_aggregation():
  features = np.asarray(random_sets(b=1, t=20))[0]
  members = [np.arange(0, 3), np.arange(3, 12), np.arange(12, 13), np.arange(13, 20)]
  variables = init(SMALL, jnp.asarray(features)[None])
  fn = sets.coreset_descriptor_fn(SMALL, variables['params'])
  batched = sets.template_descriptors(fn, features, members, batch_size=2)
  for i, rows in enumerate(members):
    alone = SMALL.apply(variables, jnp.asarray(features[rows])[None]).descriptor[0]
    np.testing.assert_allclose(batched[i], alone, atol=1e-5)
  report = sets.evaluate_templates(fn, features, sets.TemplateProtocol(
      tuple(members), np.array([[0, 1], [0, 2], [1, 3], [2, 3]] * 3), np.array([True, False, False, True] * 3)))
  assert set(report['tar_at_far']) == {'1e-06', '1e-05', '0.0001', '0.001', '0.01', '0.1'}


def test_enrolment_sets_hold_out_every_enrolment_image_from_the_probes():
  from fvjax.train.enrolment import enrolment_sets
  labels = np.repeat([0, 1, 2, 3], [6, 6, 3, 6])  # identity 2 has too few images to enrol from 3 and still probe
  indices = np.arange(len(labels))
  enrolled, probes, owner = enrolment_sets(labels, indices, set_size=3, seed=0)
  assert enrolled.shape == (3, 3) and [labels[e[0]] for e in enrolled] == [0, 1, 3]
  assert all((labels[e] == labels[e[0]]).all() for e in enrolled)
  assert not np.intersect1d(enrolled, probes).size and len(probes) == len(labels) - 9
  np.testing.assert_array_equal(owner, [{0: 0, 1: 1, 2: -1, 3: 2}[l] for l in labels[probes]])
  with pytest.raises(ValueError, match='2\\+ identities with more than 6 images'):
    enrolment_sets(labels, indices, set_size=6, seed=0)
