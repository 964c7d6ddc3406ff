"""The shared-base generator, f's normalised features, the graded objective and the shared-f floor.

Oracles: `fvjax.edge.numpy_forward` (f written again in plain NumPy, no JAX) and hand-written NumPy losses.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fvjax import edge
from fvjax.models import hypernet, verifier
from fvjax.train import objectives

SPEC = verifier.VerifierSpec()
NORMED = dataclasses.replace(SPEC, normalize_features=True)


def numpy_pooled(theta: np.ndarray, inputs: np.ndarray, spec: verifier.VerifierSpec) -> np.ndarray:
  """f's pooled features [B, c] through the NumPy twin alone: logit kernel = each basis vector in turn, bias 0."""
  plain = dataclasses.replace(spec, normalize_features=False)
  params = verifier.unflatten(jnp.asarray(theta), spec)
  columns = []
  for i in range(spec.channels[-1]):
    basis = {**params, 'logit/kernel': jnp.eye(spec.channels[-1])[i], 'logit/bias': jnp.zeros(())}
    columns.append(edge.numpy_forward(np.asarray(verifier.flatten(basis, spec)), inputs, plain))
  return np.stack(columns, axis=1)


@pytest.mark.parametrize('conv_impl', ['xla', 'matmul'])
def test_stem_then_the_rest_equals_the_whole_verifier(conv_impl):
  theta = verifier.init_theta(jax.random.key(0), NORMED)
  x = jax.random.normal(jax.random.key(1), (3, 64, 64, 3))
  whole = verifier.apply(theta, x, NORMED, conv_impl)
  for k in range(len(NORMED.strides) + 1):
    stem = verifier.stem(theta, x, NORMED, k, conv_impl)
    np.testing.assert_allclose(verifier.apply(theta, stem, NORMED, conv_impl, from_layer=k), whole,
                               rtol=1e-4, atol=1e-5)
  assert verifier.stem(theta, x, NORMED, 2).shape == (3, 16, 16, 32)


def test_normalized_features_give_a_scaled_cosine_in_jax_and_numpy():
  theta = verifier.init_theta(jax.random.key(2), NORMED)
  x = np.asarray(jax.random.normal(jax.random.key(3), (4, 64, 64, 3)))
  pooled = numpy_pooled(np.asarray(theta), x, NORMED)
  params = verifier.unflatten(theta, NORMED)
  by_hand = pooled / np.linalg.norm(pooled, axis=1, keepdims=True) @ np.asarray(params['logit/kernel']) \
      + float(params['logit/bias'])
  np.testing.assert_allclose(edge.numpy_forward(np.asarray(theta), x, NORMED), by_hand, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(verifier.apply(theta, x, NORMED), by_hand, rtol=1e-4, atol=1e-5)
  # and it is scale-invariant in the pooled features: doubling the last conv layer's weights changes nothing
  doubled = {**params, 'conv3/kernel': 2 * params['conv3/kernel'], 'conv3/bias': 2 * params['conv3/bias']}
  np.testing.assert_allclose(verifier.apply(verifier.flatten(doubled, NORMED), x, NORMED), by_hand, rtol=1e-4,
                             atol=1e-5)


def test_shared_base_generates_only_the_personal_layers():
  gen = hypernet.WeightGenerator(SPEC, hidden=8, shared_base=True, personal_layers=('conv3', 'logit'))
  emb = jax.random.normal(jax.random.key(0), (3, 5))
  variables = gen.init(jax.random.key(1), emb)
  thetas = gen.apply(variables, emb)
  theta_0 = variables['params']['theta_0']
  personal = np.concatenate([np.full(np.prod(shape, dtype=int), name.split('/')[0] in ('conv3', 'logit'))
                             for name, shape in SPEC.layer_shapes()])
  np.testing.assert_array_equal(thetas[:, ~personal], np.broadcast_to(theta_0[~personal], (3, (~personal).sum())))
  assert np.all(np.std(np.asarray(thetas[:, personal]), axis=0)[:-1] > 0)  # every generated weight differs by user
  assert gen.first_personal_layer == 3
  assert hypernet.WeightGenerator(SPEC, shared_base=True).first_personal_layer == 4  # logit only
  assert hypernet.WeightGenerator(SPEC).first_personal_layer == 0  # the paper's: everything generated
  assert not {k for k in variables['params'] if k.startswith('head_conv0')}  # no heads for shared layers
  with pytest.raises(ValueError, match="personal_layers=\\('conv9',\\) must name some of f's layers"):
    hypernet.WeightGenerator(SPEC, shared_base=True, personal_layers=('conv9',)).init(jax.random.key(0), emb)


def test_personal_depthwise_pooling_starts_near_the_mean():
  """Generated pooling weights are sized like the mean's 1/64 (He scaling, sqrt(2/64), would swamp theta_0's)."""
  spec = dataclasses.replace(NORMED, pooling='depthwise')
  gen = hypernet.WeightGenerator(spec, hidden=64, shared_base=True, personal_layers=('pool', 'logit'))
  emb = jax.random.normal(jax.random.key(0), (16, 8))
  variables = gen.init(jax.random.key(1), emb)
  assert gen.first_personal_layer == 4
  pools = np.stack([np.asarray(verifier.unflatten(t, spec)['pool/kernel']) for t in gen.apply(variables, emb)])
  np.testing.assert_allclose(pools.mean(), 1 / 64, rtol=0.2)  # theta_0's mean pooling, moved per user
  assert 0.3 / 64 < pools.std(axis=0).mean() < 3 / 64


def test_pair_loss_by_hand():
  rng = np.random.default_rng(0)
  logits, cosines = rng.normal(size=(3, 4)), rng.uniform(-1, 1, size=(3, 4))
  targets = np.array([[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]], np.float32)
  mask = np.ones((3, 4)); mask[0, 1] = 0
  loss, metrics = objectives.pair_loss(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(cosines),
                                       distill_weight=2.0, distill_centre=0.3, distill_scale=10.0,
                                       mask=jnp.asarray(mask))
  weights = mask * np.where(targets > 0, 7 / 4, 1.0)  # 11 pairs kept: 4 positive, 7 negative
  bce = np.log1p(np.exp(-logits)) * targets + np.log1p(np.exp(logits)) * (1 - targets)
  distill = np.sum(mask * (logits / 10 - (cosines - 0.3))**2) / 11
  np.testing.assert_allclose(metrics['bce'], np.sum(weights * bce) / weights.sum(), rtol=1e-5)
  np.testing.assert_allclose(metrics['distill'], distill, rtol=1e-5)
  np.testing.assert_allclose(loss, np.sum(weights * bce) / weights.sum() + 2 * distill, rtol=1e-5)


def test_teacher_cosines_are_those_of_the_centred_unit_embeddings():
  a, b, centre = np.array([[3.0, 4.0]]), np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([0.1, 0.2])
  moved_a = a / 5 - centre
  moved_b = b / np.linalg.norm(b, axis=1, keepdims=True) - centre
  expected = (moved_a / np.linalg.norm(moved_a)) @ (moved_b / np.linalg.norm(moved_b, axis=1, keepdims=True)).T
  np.testing.assert_allclose(objectives.teacher_cosines(jnp.asarray(a), jnp.asarray(b), jnp.asarray(centre)),
                             expected, rtol=1e-5)


def _batch(users=3, per_user=2, embedding=4):
  keys = jax.random.split(jax.random.key(7), 3)
  return {'enrol': jax.random.normal(keys[0], (users, embedding)),
          'probes': jax.random.normal(keys[1], (users * per_user, 64, 64, 3)),
          'probe_embed': jax.random.normal(keys[2], (users * per_user, embedding)),
          'probe_user': jnp.repeat(jnp.arange(users), per_user), 'norm_weight': jnp.zeros(users)}


def _numpy_objective(logits, targets, cosines, mask, distill_weight):
  weights = mask * np.where(targets > 0, (mask.sum() - (mask * targets).sum()) / (mask * targets).sum(), 1.0)
  bce = np.log1p(np.exp(-logits)) * targets + np.log1p(np.exp(logits)) * (1 - targets)
  return np.sum(weights * bce) / weights.sum() + distill_weight * np.sum(mask * (logits - cosines)**2) / mask.sum()


def test_shared_base_loss_runs_the_stem_once_and_equals_every_user_run_whole():
  gen = hypernet.WeightGenerator(NORMED, hidden=8, shared_base=True)
  centre = np.array([0.2, 0.0, 0.0, 0.0], np.float32)
  task = objectives.hyper_task(gen, NORMED, 4, batches=None, input_centre=centre, distill_weight=0.5)
  params = task.init(jax.random.key(0))['params']
  batch = _batch()
  loss, _ = task.loss(params, {}, batch, None)
  thetas = np.asarray(gen.apply({'params': params}, batch['enrol']))
  logits = np.stack([edge.numpy_forward(t, np.asarray(batch['probes']), NORMED) for t in thetas])
  targets = np.kron(np.eye(3), np.ones(2))
  cosines = np.asarray(objectives.teacher_cosines(batch['enrol'], batch['probe_embed'], centre))
  np.testing.assert_allclose(loss, _numpy_objective(logits, targets, cosines, np.ones((3, 6)), 0.5), rtol=1e-4)


def test_shared_f_floor_loss_and_enrolment_score_centred_templates_of_f_features():
  task = objectives.shared_f_task(NORMED, 4, batches=None, distill_weight=1.0)
  params = task.init(jax.random.key(0))['params']
  params['similarity'] = jnp.array([5.0, -1.0])
  params['centre'] = jnp.full(32, 0.1)
  batch = _batch()
  loss, _ = task.loss(params, {}, batch, None)
  g = numpy_pooled(np.asarray(params['theta']), np.asarray(batch['probes']), NORMED)
  g /= np.linalg.norm(g, axis=1, keepdims=True)
  template = lambda v: (v - 0.1) / np.linalg.norm(v - 0.1, axis=-1, keepdims=True)
  logits = 5 * template(g) @ g.T - 1
  targets = np.kron(np.eye(3), np.ones((2, 2)))
  cosines = np.asarray(objectives.teacher_cosines(batch['probe_embed'], batch['probe_embed'], jnp.zeros(4)))
  np.testing.assert_allclose(loss, _numpy_objective(logits, targets, cosines, 1 - np.eye(6), 1.0), rtol=1e-4)
  # enrolled users: f(theta_u, x) = 5 <template(g(enrolment)), g(x)> - 1, run by the NumPy twin
  thetas = np.asarray(objectives.shared_f_enrol(params, batch['probes'][:2], NORMED))
  for u in range(2):
    np.testing.assert_allclose(edge.numpy_forward(thetas[u], np.asarray(batch['probes']), NORMED), logits[u],
                               rtol=1e-4, atol=1e-5)
  # several enrolment images: the mean of their unit features, renormalised
  both = np.asarray(objectives.shared_f_enrol(params, batch['probes'][None, :2], NORMED))[0]
  mean = g[:2].mean(0) / np.linalg.norm(g[:2].mean(0))
  np.testing.assert_allclose(edge.numpy_forward(both, np.asarray(batch['probes']), NORMED), 5 * g @ template(mean) - 1,
                             rtol=1e-4, atol=1e-5)


def _numpy_feature_distillation(g, head, teacher_embeddings, centre):
  """mean(1 - cos(g @ head, centred teacher)), written out in NumPy."""
  unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)
  teacher = unit(unit(teacher_embeddings) - centre)
  return np.mean(1 - np.sum(unit(g @ head) * teacher, axis=-1))


def test_feature_distillation_adds_theta_0s_features_against_the_teacher_and_trains_only_the_shared_base():
  gen = hypernet.WeightGenerator(NORMED, hidden=8, shared_base=True)
  centre = np.array([0.2, 0.0, 0.0, 0.0], np.float32)
  plain = objectives.hyper_task(gen, NORMED, 4, batches=None, input_centre=centre, distill_weight=0.5)
  task = objectives.hyper_task(gen, NORMED, 4, batches=None, input_centre=centre, distill_weight=0.5,
                               feature_distill_weight=2.0)
  params = task.init(jax.random.key(0))['params']
  assert params['feature_head'].shape == (32, 4)
  # the generator's own parameters are those of a run without the term: published runs start the same
  jax.tree.map(np.testing.assert_array_equal, plain.init(jax.random.key(0))['params'],
               {k: v for k, v in params.items() if k != 'feature_head'})
  batch = _batch()
  loss, (_, metrics) = task.loss(params, {}, batch, None)
  base_loss, _ = plain.loss(params, {}, batch, None)
  g = numpy_pooled(np.asarray(params['theta_0']), np.asarray(batch['probes']), NORMED)
  g /= np.linalg.norm(g, axis=1, keepdims=True)
  expected = _numpy_feature_distillation(g, np.asarray(params['feature_head']), np.asarray(batch['probe_embed']),
                                         centre)
  np.testing.assert_allclose(metrics['feature_distill'], expected, rtol=1e-4)
  np.testing.assert_allclose(loss, base_loss + 2.0 * expected, rtol=1e-4)
  # the term's gradient reaches theta_0's convolutions and the head, never the generator's personal heads
  term = lambda p: task.loss(p, {}, batch, None)[0] - plain.loss(p, {}, batch, None)[0]
  grads = jax.grad(term)(params)
  assert np.abs(grads['feature_head']).max() > 0
  shared = verifier.unflatten(grads['theta_0'], NORMED)
  assert np.abs(shared['conv0/kernel']).max() > 0 and np.abs(shared['logit/kernel']).max() == 0
  assert all(np.abs(leaf).max() < 1e-6 for leaf in jax.tree.leaves(grads['head_logit_kernel']))


def test_distill_only_stem_keeps_the_pair_loss_out_of_the_shared_convolutions():
  gen = hypernet.WeightGenerator(NORMED, hidden=8, shared_base=True)
  both = objectives.hyper_task(gen, NORMED, 4, batches=None, distill_weight=0.5, feature_distill_weight=2.0)
  task = objectives.hyper_task(gen, NORMED, 4, batches=None, distill_weight=0.5, feature_distill_weight=2.0,
                               distill_only_stem=True)
  params = task.init(jax.random.key(0))['params']
  batch = _batch()
  np.testing.assert_allclose(task.loss(params, {}, batch, None)[0], both.loss(params, {}, batch, None)[0], rtol=1e-6)
  grads = jax.grad(lambda p: task.loss(p, {}, batch, None)[0])(params)
  distilled = jax.grad(lambda p: task.loss(p, {}, batch, None)[1][1]['feature_distill'] * 2.0)(params)
  shared, alone = verifier.unflatten(grads['theta_0'], NORMED), verifier.unflatten(distilled['theta_0'], NORMED)
  for i in range(4):  # the convolutions' gradient is the distillation's alone
    np.testing.assert_allclose(shared[f'conv{i}/kernel'], alone[f'conv{i}/kernel'], rtol=1e-5, atol=1e-7)
  assert np.abs(grads['head_logit_kernel']['kernel']).max() > 0  # the generator still learns from the pairs
  with pytest.raises(ValueError, match='distill_only_stem needs'):
    objectives.hyper_task(gen, NORMED, 4, batches=None, distill_only_stem=True)


def test_a_linear_generator_tied_to_the_distillation_head_maps_the_centred_embedding_by_it():
  gen = hypernet.WeightGenerator(NORMED, hidden=0, shared_base=True)
  centre = np.array([0.2, 0.0, 0.0, 0.0], np.float32)
  task = objectives.hyper_task(gen, NORMED, 4, batches=None, input_centre=centre, distill_weight=0.5,
                               feature_distill_weight=2.0, tied_feature_head=True)
  params = task.init(jax.random.key(0))['params']
  assert 'feature_head' not in params and 'trunk0' not in params
  batch = _batch()
  # The generated logit kernel by hand: theta_0's + sqrt(2 / c) * (sqrt(E) * centred(e) @ W + b), no trunk.
  unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)
  h = unit(unit(np.asarray(batch['enrol'])) - centre) * 2.0  # sqrt(E), E = 4
  head = params['head_logit_kernel']
  raw = h @ np.asarray(head['kernel']) + np.asarray(head['bias'])
  thetas = np.asarray(gen.apply({'params': params}, batch['enrol']))
  kernels = jax.vmap(lambda t: verifier.unflatten(t, NORMED)['logit/kernel'])(thetas)
  theta_0 = verifier.unflatten(params['theta_0'], NORMED)
  np.testing.assert_allclose(kernels, theta_0['logit/kernel'] + np.sqrt(2 / 32) * raw, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(hypernet.logit_kernel_map(params), np.asarray(head['kernel']).T)
  # Feature distillation reads theta_0's features through that same map [c, E], and trains it.
  _, (_, metrics) = task.loss(params, {}, batch, None)
  g = unit(numpy_pooled(np.asarray(params['theta_0']), np.asarray(batch['probes']), NORMED))
  expected = _numpy_feature_distillation(g, np.asarray(head['kernel']).T, np.asarray(batch['probe_embed']), centre)
  np.testing.assert_allclose(metrics['feature_distill'], expected, rtol=1e-4)
  distilled = jax.grad(lambda p: task.loss(p, {}, batch, None)[1][1]['feature_distill'])(params)
  assert np.abs(distilled['head_logit_kernel']['kernel']).max() > 0
  for bad in (hypernet.WeightGenerator(NORMED, hidden=8, shared_base=True),
              hypernet.WeightGenerator(NORMED, hidden=0, shared_base=True, personal_layers=('conv3', 'logit'))):
    with pytest.raises(ValueError, match='tied_feature_head'):
      objectives.hyper_task(bad, NORMED, 4, batches=None, feature_distill_weight=1.0, tied_feature_head=True)


def test_distill_only_map_lets_the_pair_loss_train_only_the_maps_scale():
  gen = hypernet.WeightGenerator(NORMED, hidden=0, shared_base=True)
  kwargs = dict(distill_weight=0.5, feature_distill_weight=2.0, tied_feature_head=True)
  tied = objectives.hyper_task(gen, NORMED, 4, batches=None, **kwargs)
  task = objectives.hyper_task(gen, NORMED, 4, batches=None, distill_only_map=True, **kwargs)
  params = task.init(jax.random.key(0))['params']
  batch = _batch()
  np.testing.assert_allclose(task.loss(params, {}, batch, None)[0], tied.loss(params, {}, batch, None)[0], rtol=1e-6)
  kernel = lambda grads: np.asarray(grads['head_logit_kernel']['kernel'], np.float64).ravel()
  total = kernel(jax.grad(lambda p: task.loss(p, {}, batch, None)[0])(params))
  distilled = kernel(jax.grad(lambda p: task.loss(p, {}, batch, None)[1][1]['feature_distill'] * 2.0)(params))
  pairs = total - distilled
  w = np.asarray(params['head_logit_kernel']['kernel'], np.float64).ravel()
  # The distillation reads the map through a normalised product: it never changes the map's norm, only its
  # direction; what the pair loss adds is a multiple of the map itself (its norm), never a turn.
  assert abs(distilled @ w) < 1e-5 * np.linalg.norm(distilled) * np.linalg.norm(w)
  assert np.linalg.norm(pairs) > 1e-3 * np.linalg.norm(total)
  np.testing.assert_allclose(pairs, (pairs @ w / (w @ w)) * w, rtol=1e-4, atol=1e-6 * np.abs(pairs).max())
  free = kernel(jax.grad(lambda p: tied.loss(p, {}, batch, None)[0])(params)) - distilled
  assert np.linalg.norm(free - (free @ w / (w @ w)) * w) > 0.1 * np.linalg.norm(free)  # without it, the pairs turn it
  with pytest.raises(ValueError, match='distill_only_map'):
    objectives.hyper_task(gen, NORMED, 4, batches=None, feature_distill_weight=1.0, distill_only_map=True)


def test_feature_distillation_needs_a_shared_base():
  gen = hypernet.WeightGenerator(NORMED, hidden=8)
  with pytest.raises(ValueError, match='shared_base=True'):
    objectives.hyper_task(gen, NORMED, 4, batches=None, feature_distill_weight=1.0)


def test_shared_f_floor_distilled_from_the_teacher():
  plain = objectives.shared_f_task(NORMED, 4, batches=None)
  task = objectives.shared_f_task(NORMED, 4, batches=None, feature_distill_weight=1.0)
  params = task.init(jax.random.key(0))['params']
  batch = _batch()
  loss, (_, metrics) = task.loss(params, {}, batch, None)
  g = numpy_pooled(np.asarray(params['theta']), np.asarray(batch['probes']), NORMED)
  g /= np.linalg.norm(g, axis=1, keepdims=True)
  expected = _numpy_feature_distillation(g, np.asarray(params['feature_head']), np.asarray(batch['probe_embed']),
                                         np.zeros(4))
  np.testing.assert_allclose(metrics['feature_distill'], expected, rtol=1e-4)
  np.testing.assert_allclose(loss, plain.loss(params, {}, batch, None)[0] + expected, rtol=1e-4)


def test_shared_f_needs_normalized_features():
  with pytest.raises(ValueError, match='normalize_features=True'):
    objectives.shared_f_task(SPEC, 4, batches=None)


def test_extra_people_names_file_and_concatenated_source(tmp_path):
  from fvjax.train import extra_people

  names = tmp_path / 'names.txt'
  names.write_text('001 50 Cent\n002 Aaron Hernandez\nMadonna\n\n')
  assert extra_people.excluded_names(names) == {'50_Cent', 'Aaron_Hernandez', 'Madonna'}
  source = extra_people.ConcatSource((['a', 'b'], [], ['c']))
  assert len(source) == 3 and [source[i] for i in range(3)] == ['a', 'b', 'c']
  with pytest.raises(IndexError):
    source[3]


def test_pair_set_embeddings_are_computed_once_per_backbone_and_file(tmp_path, monkeypatch):
  from fvjax.data import folder
  from fvjax.eval import pairs

  monkeypatch.setattr(folder, 'DEFAULT_CACHE', tmp_path / 'cache')
  calls = []

  class Backbone:  # a stand-in with the fields the cache key reads
    source, step = 'pretrained:toy', 0

    @staticmethod
    def features_fn(x):
      calls.append(len(x))
      return jnp.mean(x, axis=(1, 2))

  pair_file = tmp_path / 'pairs.txt'
  pair_file.write_text('1 a.jpg b.jpg 1\n')
  images = np.random.default_rng(0).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
  first = pairs.pair_set_embeddings(Backbone, pair_file, images)
  assert calls and np.allclose(np.linalg.norm(first, axis=1), 1)
  made = len(calls)
  np.testing.assert_array_equal(pairs.pair_set_embeddings(Backbone, pair_file, images), first)
  assert len(calls) == made  # read back, not recomputed
  assert not list((tmp_path / 'cache').rglob('*.partial.npy'))


def test_pair_logits_are_the_score_matrix_diagonal_and_features_what_the_logit_reads():
  from fvjax.eval import personalized
  thetas = np.stack([np.asarray(verifier.init_theta(jax.random.key(i), NORMED)) for i in range(5)])
  inputs = np.asarray(jax.random.normal(jax.random.key(9), (5, 64, 64, 3)))
  np.testing.assert_allclose(personalized.pair_logits(thetas, inputs, NORMED, chunk=2),
                             np.diag(personalized.score_matrix(thetas, inputs, NORMED)), rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match='one input per user: 5 thetas, 4 inputs'):
    personalized.pair_logits(thetas, inputs[:4], NORMED)
  g = numpy_pooled(thetas[0], inputs, NORMED)
  np.testing.assert_allclose(verifier.features(jnp.asarray(thetas[0]), inputs, NORMED),
                             g / np.linalg.norm(g, axis=1, keepdims=True), rtol=1e-4, atol=1e-5)
