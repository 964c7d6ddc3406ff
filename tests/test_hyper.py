import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fvjax import backbones, edge, parallel
from fvjax.eval import personalized
from fvjax.models import count_madds_of, hypernet, verifier
from fvjax.train import features as features_lib, hyper, kcs, objectives

SPEC = verifier.VerifierSpec()


def test_verifier_param_and_madd_counts_by_hand():
  # conv 3x3: 3->16 s2, 16->32 s2, 32->32 s2, 32->32 s1 (with biases), linear 32->1 (with bias), on 64x64.
  params = (27 * 16 + 16) + (144 * 32 + 32) + (288 * 32 + 32) + (288 * 32 + 32) + (32 + 1)
  madds = 32 * 32 * 16 * 27 + 16 * 16 * 32 * 144 + 8 * 8 * 32 * 288 + 8 * 8 * 32 * 288 + 32
  assert SPEC.num_params == params == 23_617
  theta = jnp.zeros(SPEC.num_params)
  assert count_madds_of(lambda t, x: verifier.apply(t, x), theta, jnp.zeros((1, 64, 64, 3))) == madds == 2_801_696


DEPTHWISE = dataclasses.replace(SPEC, pooling='depthwise')


def test_depthwise_pooling_counts_by_hand_and_starts_as_the_mean():
  # one weight per position and channel of the last 8x8x32 map (64 / 2 / 2 / 2 / 1 = 8), one multiply-add each
  assert DEPTHWISE.feature_map_size == 8
  assert DEPTHWISE.num_params == 23_617 + 8 * 8 * 32 == 25_665
  assert DEPTHWISE.layer_names == ['conv0', 'conv1', 'conv2', 'conv3', 'pool', 'logit']
  theta = verifier.init_theta(jax.random.key(0), DEPTHWISE)
  x = jax.random.normal(jax.random.key(1), (3, 64, 64, 3))
  assert count_madds_of(lambda t, v: verifier.apply(t, v, DEPTHWISE), theta, x[:1]) == 2_801_696 + 2_048
  # a fresh depthwise f is the mean-pooling f with the same other weights
  mean_theta = verifier.flatten({k: v for k, v in verifier.unflatten(theta, DEPTHWISE).items() if k != 'pool/kernel'},
                                SPEC)
  np.testing.assert_allclose(verifier.apply(theta, x, DEPTHWISE), verifier.apply(mean_theta, x), rtol=1e-5, atol=1e-6)
  assert edge.VerifierSpec.from_dict(DEPTHWISE.to_dict()) == DEPTHWISE  # user files keep it
  with pytest.raises(ValueError, match='unknown verifier pooling'):
    dataclasses.replace(SPEC, pooling='max')


@pytest.mark.parametrize('normalize', [False, True])
def test_depthwise_pooling_numpy_forward_and_stems_equal_jax(normalize):
  spec = dataclasses.replace(DEPTHWISE, normalize_features=normalize)
  theta = np.asarray(verifier.init_theta(jax.random.key(2), spec))
  params = verifier.unflatten(jnp.asarray(theta), spec)
  params['pool/kernel'] = jax.random.normal(jax.random.key(3), params['pool/kernel'].shape) / 8  # not the mean
  theta = verifier.flatten(params, spec)
  x = jax.random.normal(jax.random.key(4), (3, 64, 64, 3))
  whole = verifier.apply(theta, x, spec)
  np.testing.assert_allclose(edge.numpy_forward(np.asarray(theta), np.asarray(x), spec), whole, rtol=1e-4, atol=1e-5)
  for k in range(len(spec.layer_names)):  # the pool and logit layers start from the last feature map
    stem = verifier.stem(theta, x, spec, k, 'matmul')
    np.testing.assert_allclose(verifier.apply(theta, stem, spec, 'matmul', from_layer=k), whole, rtol=1e-4,
                               atol=1e-5)


def test_flatten_unflatten_roundtrip_and_shape_error():
  theta = verifier.init_theta(jax.random.key(0))
  np.testing.assert_array_equal(verifier.flatten(verifier.unflatten(theta, SPEC), SPEC), theta)
  with pytest.raises(ValueError, match=r'needs \(23617,\)'):
    verifier.apply(theta[:-1], jnp.zeros((1, 64, 64, 3)))


def test_conv_impls_agree_in_value_and_gradient():
  theta = verifier.init_theta(jax.random.key(3))
  x = jax.random.normal(jax.random.key(4), (2, 64, 64, 3))
  outputs = {impl: verifier.apply(theta, x, conv_impl=impl) for impl in ('xla', 'matmul')}
  np.testing.assert_allclose(outputs['matmul'], outputs['xla'], rtol=1e-4, atol=1e-5)
  grads = {impl: jax.grad(lambda t: jnp.sum(verifier.apply(t, x, conv_impl=impl)**2))(theta)
           for impl in ('xla', 'matmul')}
  np.testing.assert_allclose(grads['matmul'], grads['xla'], rtol=1e-3, atol=1e-4)


def test_numpy_forward_equals_jax():
  theta = verifier.init_theta(jax.random.key(1))
  x = jax.random.normal(jax.random.key(2), (3, 64, 64, 3))
  np.testing.assert_allclose(edge.numpy_forward(np.asarray(theta), np.asarray(x)), verifier.apply(theta, x),
                             rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('budget_probes,users_per_step', [(None, 1), (None, 2), (None, 5), (3, 1)])
def test_score_matrix_equals_python_loop_over_users(budget_probes, users_per_step):
  """Sequential users, vmapped groups (with a remainder), one vmap over all, and tiny tiles all equal a loop."""
  thetas = np.stack([np.asarray(verifier.init_theta(jax.random.key(i))) for i in range(5)])
  probes = np.asarray(jax.random.normal(jax.random.key(9), (7, 64, 64, 3)))
  per_probe = personalized.probe_bytes(SPEC, users_per_step)
  budget = 2 << 30 if budget_probes is None else 2 * budget_probes * per_probe
  scores = personalized.score_matrix(thetas, probes, memory_budget_bytes=budget, users_per_step=users_per_step)
  loop = np.stack([np.asarray(verifier.apply(t, probes)) for t in thetas])
  np.testing.assert_allclose(scores, loop, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('users_per_step', [1, 4])
@pytest.mark.parametrize('budget_mib', [64, 256])
def test_compiled_tile_fits_its_memory_budget(users_per_step, budget_mib):
  # The oracle is XLA's own accounting of the compiled tile scorer (arguments + temporaries + outputs).
  budget = budget_mib << 20
  users, probes = personalized.tile_shape(100_000, 1_000, SPEC, budget, users_per_step=users_per_step)
  compiled = personalized._tile_fn(SPEC, parallel.data_mesh(), users_per_step).lower(
      jax.ShapeDtypeStruct((users, SPEC.num_params), jnp.float32),
      jax.ShapeDtypeStruct((probes, 64, 64, 3), jnp.float32)).compile()
  memory = compiled.memory_analysis()
  used = memory.argument_size_in_bytes + memory.temp_size_in_bytes + memory.output_size_in_bytes
  assert 0.5 * budget < used <= budget  # fits, and does not waste half of it
  assert personalized.tile_shape(100, 1_000, SPEC, budget, devices=8)[0] % 8 == 0  # users split evenly


def test_apply_many_rejects_a_zero_step():
  with pytest.raises(ValueError, match='users_per_step'):
    verifier.apply_many(jnp.zeros((2, SPEC.num_params)), jnp.zeros((1, 64, 64, 3)), users_per_step=0)


def test_kmeans_matches_brute_force_assignment():
  rng = np.random.default_rng(0)
  blobs = np.array([[0.0, 0.0], [5.0, 5.0], [0.0, 6.0]])
  points = np.concatenate([c + 0.3 * rng.normal(size=(20, 2)) for c in blobs]).astype(np.float32)
  centroids, assignment = kcs.kmeans(jnp.asarray(points), 3, jax.random.key(0), iterations=20)
  centroids, assignment = np.asarray(centroids), np.asarray(assignment)
  brute = np.array([np.argmin([np.sum((p - c)**2) for c in centroids]) for p in points])
  np.testing.assert_array_equal(assignment, brute)
  for k in range(3):  # a fixed point: each centroid is the mean of its points
    np.testing.assert_allclose(centroids[k], points[assignment == k].mean(0), atol=1e-5)
  # and the three blobs are recovered
  assert len({tuple(np.unique(assignment[i * 20:(i + 1) * 20])) for i in range(3)}) == 3
  assert all(len(np.unique(assignment[i * 20:(i + 1) * 20])) == 1 for i in range(3))


def test_kcs_batches_hold_one_cluster_only():
  cluster_of = np.array([0, 1, 0, 2, 1, 0, 2, 0, 1, 1])
  rng = np.random.default_rng(0)
  for _ in range(50):
    chosen = kcs.kcs_batch(cluster_of, 3, rng)
    assert len(set(chosen)) == 3
    assert len(set(cluster_of[chosen])) == 1
    assert cluster_of[chosen][0] != 2  # cluster 2 has only 2 identities
  with pytest.raises(ValueError, match='no cluster holds 5'):
    kcs.kcs_batch(cluster_of, 5, rng)


def test_generator_emits_he_scaled_verifiers():
  gen = hypernet.WeightGenerator(SPEC, hidden=32)
  emb = jax.random.normal(jax.random.key(0), (64, 16))
  variables = gen.init(jax.random.key(1), emb)
  thetas = gen.apply(variables, emb)
  assert thetas.shape == (64, SPEC.num_params)
  conv1 = jax.vmap(lambda t: verifier.unflatten(t, SPEC)['conv1/kernel'])(thetas)
  expected_std = np.sqrt(2.0 / SPEC.fan_in('conv1/kernel'))
  assert 0.3 * expected_std < float(jnp.std(conv1)) < 3 * expected_std


def test_own_template_adds_f_own_features_of_the_enrolment_images_to_the_logit_kernel():
  spec = dataclasses.replace(SPEC, normalize_features=True, pooling='depthwise')
  own = hypernet.WeightGenerator(spec, hidden=16, shared_base=True, own_template=True)
  emb = jax.random.normal(jax.random.key(0), (3, 8))
  inputs = jax.random.uniform(jax.random.key(1), (3, 2, 64, 64, 3), minval=-1.0, maxval=1.0)  # 2 images each
  params = own.init(jax.random.key(2), emb, inputs)['params']
  centre = 0.05 * np.random.default_rng(0).normal(size=spec.channels[-1])
  params = {**params, 'template_scale': jnp.array(2.5), 'template_centre': jnp.asarray(centre, jnp.float32)}
  thetas = np.asarray(own.apply({'params': params}, emb, inputs))
  plain = hypernet.WeightGenerator(spec, hidden=16, shared_base=True)
  generated = np.asarray(plain.apply({'params': {k: v for k, v in params.items() if not k.startswith('template')}},
                                     emb))
  # The oracle: theta_0's pooled features from f's NumPy twin (feature j = the logit with kernel e_j, bias 0).
  theta_0 = np.asarray(params['theta_0'], np.float64)
  logit = dict(zip([n for n, _ in spec.layer_shapes()], np.split(np.arange(spec.num_params), np.cumsum(
      [int(np.prod(shape)) for _, shape in spec.layer_shapes()])[:-1])))
  def pooled(images):
    columns = []
    for j in range(spec.channels[-1]):
      probe = theta_0.copy()
      probe[logit['logit/kernel']] = np.eye(spec.channels[-1])[j]
      probe[logit['logit/bias']] = 0.0
      columns.append(edge.numpy_forward(probe, images, spec))
    return np.stack(columns, axis=-1)
  unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)
  expected = [2.5 * unit(unit(unit(pooled(np.asarray(x))).mean(axis=0)) - centre) for x in inputs]
  difference = thetas - generated
  np.testing.assert_allclose(difference[:, logit['logit/kernel']], expected, atol=2e-5)
  np.testing.assert_array_equal(np.delete(difference, logit['logit/kernel'], axis=1), 0.0)
  # Order-invariant in a user's images; one image each is the [U, s, s, 3] form.
  np.testing.assert_allclose(own.apply({'params': params}, emb, inputs[:, ::-1]), thetas, atol=1e-5)
  single = np.asarray(own.apply({'params': params}, emb, inputs[:, 0]))
  np.testing.assert_allclose(single, own.apply({'params': params}, emb, inputs[:, :1]), atol=1e-6)
  with pytest.raises(ValueError, match='enrol_inputs'):
    own.apply({'params': params}, emb)
  with pytest.raises(ValueError, match='shared_base'):
    hypernet.WeightGenerator(spec, own_template=True).init(jax.random.key(0), emb, inputs)


# The paper's form, then a shared base (theta_0 learns colour features once, the personal logit layer which to accept)
# with normalised features and the graded objective.
@pytest.mark.parametrize('shared_base, steps, learning_rate', [(False, 60, 1e-3), (True, 150, 3e-3)])
def test_generator_learns_a_separable_toy_problem(shared_base, steps, learning_rate):
  # Four users, each with its own embedding and its own probe colour: the generated verifiers must learn to
  # accept their user's colour and reject the others'.
  users, per_user = 4, 3
  colours = np.eye(4, 3, dtype=np.float32) * 1.5 - 0.5
  rng = np.random.default_rng(0)
  probes = (np.repeat(colours, per_user, axis=0)[:, None, None, :]
            + 0.2 * rng.normal(size=(users * per_user, 64, 64, 3))).astype(np.float32)
  batch = {'enrol': jnp.asarray(np.eye(users, 8), jnp.float32), 'probes': jnp.asarray(probes),
           'probe_embed': jnp.asarray(np.repeat(np.eye(users, 8), per_user, axis=0), jnp.float32),
           'probe_user': jnp.repeat(jnp.arange(users), per_user), 'norm_weight': jnp.zeros(users)}
  spec = dataclasses.replace(SPEC, normalize_features=shared_base)
  objective = {'distill_weight': 1.0, 'distill_centre': 0.5, 'distill_scale': 10.0} if shared_base else {}
  gen = hypernet.WeightGenerator(spec, hidden=16, shared_base=shared_base)
  task = objectives.hyper_task(gen, spec, 8, batches=None, **objective)
  params = task.init(jax.random.key(0))['params']
  optimizer = optax.adam(learning_rate)
  opt_state = optimizer.init(params)

  @jax.jit
  def step(params, opt_state):
    (_, (_, metrics)), grads = jax.value_and_grad(task.loss, has_aux=True)(params, {}, batch, None)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, metrics

  history = []
  for _ in range(steps):
    params, opt_state, metrics = step(params, opt_state)
    history.append(metrics)
  assert history[-1]['bce'] < 0.25 * history[0]['bce']
  assert history[-1]['pair_accuracy'] == 1.0
  if shared_base:
    assert history[-1]['distill'] < 0.25 * history[0]['distill']


@pytest.mark.parametrize('positive_weight', [3.0, 0.0])  # 0.0, every config's default: #negatives / #positives
def test_weighted_bce_loss_by_hand(positive_weight):
  gen = hypernet.WeightGenerator(SPEC, hidden=8)
  task = objectives.hyper_task(gen, SPEC, embedding_size=4, batches=None, positive_weight=positive_weight)
  params = task.init(jax.random.key(0))['params']
  batch = {'enrol': jax.random.normal(jax.random.key(1), (3, 4)),
           'probes': jax.random.normal(jax.random.key(2), (6, 64, 64, 3)),
           'probe_embed': jax.random.normal(jax.random.key(4), (6, 4)),
           'probe_user': jnp.array([0, 0, 1, 1, 2, 2]), 'norm_weight': jnp.array([0.5, 0.5, 0.5])}
  loss, (_, metrics) = task.loss(params, {}, batch, jax.random.key(3))
  thetas = gen.apply({'params': params}, batch['enrol'])
  logits = np.stack([np.asarray(verifier.apply(t, batch['probes'])) for t in thetas])
  targets = np.kron(np.eye(3), np.ones(2)).astype(np.float32)  # 6 positive pairs, 12 negative pairs
  weights = np.where(targets > 0, positive_weight or 12 / 6, 1.0)
  bce = np.asarray(optax.sigmoid_binary_cross_entropy(logits, targets))
  norm = np.mean(np.sum(np.asarray(thetas)**2, axis=1))
  np.testing.assert_allclose(loss, np.sum(weights * bce) / weights.sum() + 0.5 * norm, rtol=1e-4)
  np.testing.assert_allclose(metrics['theta_norm2'], norm, rtol=1e-4)


def test_enrolment_from_several_images_and_from_none():
  one = hypernet.enrolment_embedding(jnp.array([[3.0, 4.0]]))
  np.testing.assert_allclose(one, [0.6, 0.8], rtol=1e-6)
  two = hypernet.enrolment_embedding(jnp.array([[1.0, 0.0], [0.0, 10.0]]))
  np.testing.assert_allclose(two, [np.sqrt(0.5), np.sqrt(0.5)], rtol=1e-6)
  with pytest.raises(ValueError, match='at least one image'):
    hypernet.enrolment_embedding(jnp.zeros((0, 2)))


def test_runs_on_different_backbones_are_not_combined(tmp_path):
  backbones.require_same(tmp_path / 'bb', tmp_path / 'x' / '..' / 'bb', 'hyper', 'coreset')  # same place
  with pytest.raises(ValueError, match='trained on the backbone .*bb, the run coreset on .*other'):
    backbones.require_same(tmp_path / 'bb', tmp_path / 'other', 'hyper', 'coreset')
  backbones.require_same('pretrained:dlib_resnet', 'pretrained:dlib_resnet', 'hyper', 'coreset')
  with pytest.raises(ValueError, match='pretrained:dlib_resnet, the run coreset on .*bb'):
    backbones.require_same('pretrained:dlib_resnet', tmp_path / 'bb', 'hyper', 'coreset')


def test_input_centre_is_fixed_and_moves_the_generator_input():
  gen = hypernet.WeightGenerator(SPEC, hidden=8)
  emb = jax.random.normal(jax.random.key(0), (3, 4))
  centre = jnp.array([0.5, 0.0, 0.0, 0.0])
  task = objectives.hyper_task(gen, SPEC, embedding_size=4, batches=None, input_centre=centre)
  params = task.init(jax.random.key(0))['params']
  np.testing.assert_array_equal(params['input_centre'], centre)
  # the generator sees normalise(normalise(e) - centre): the same as a zero centre given the moved embeddings
  unit = emb / jnp.linalg.norm(emb, axis=1, keepdims=True)
  moved = gen.apply({'params': params}, emb)
  plain = gen.apply(hypernet.with_input_centre({'params': params}, jnp.zeros(4)), unit - centre)
  np.testing.assert_allclose(moved, plain, rtol=1e-5, atol=1e-6)
  grads = jax.grad(lambda p: jnp.sum(gen.apply({'params': p}, emb) ** 2))(params)
  assert not np.any(grads['input_centre'])  # never trained
  from fvjax.train.optim import OptimizerConfig, make_optimizer
  tx = make_optimizer(OptimizerConfig(name='adamw', weight_decay=0.5), 10)
  updates, _ = tx.update(grads, tx.init(params), params)
  assert not np.any(updates['input_centre'])  # nor decayed


def test_mean_embedding_streams_the_flip_summed_unit_embeddings():
  rng = np.random.default_rng(0)
  features = rng.normal(size=(7, 2, 5)).astype(np.float32)
  rows = np.array([6, 1, 3])
  summed = features[rows].sum(1)
  expected = (summed / np.linalg.norm(summed, axis=1, keepdims=True)).mean(0)
  np.testing.assert_allclose(features_lib.mean_embedding(features, rows), expected, rtol=1e-6)


def test_limit_identities_keeps_nested_seeded_samples_of_whole_identities():
  labels = np.repeat(np.arange(10), 3)  # 10 people x 3 images
  idx = np.flatnonzero(labels != 4)  # person 4 is not among these images
  assert np.array_equal(hyper.limit_identities(labels, idx, 0, seed=0), idx)  # 0: all
  assert np.array_equal(hyper.limit_identities(labels, idx, 9, seed=0), idx)  # as many as there are
  small, large = (hyper.limit_identities(labels, idx, k, seed=0) for k in (3, 6))
  for kept, k in ((small, 3), (large, 6)):
    people = np.unique(labels[kept])
    assert len(people) == k and 4 not in people
    assert np.array_equal(kept, idx[np.isin(labels[idx], people)])  # every image of each kept person
  assert set(small) <= set(large)  # nested: more identities only add people
  assert not np.array_equal(small, hyper.limit_identities(labels, idx, 3, seed=1))  # the seed picks them


def test_user_batches_that_cannot_be_drawn_are_refused_before_training():
  config = hyper.default_config()
  config.users_per_batch, config.num_clusters, config.kcs_start, config.total_steps = 4, 3, 5, 10
  hyper.check_user_batches(np.array([0, 0, 0, 0, 1, 2]), config)  # cluster 0 holds 4: fine
  with pytest.raises(ValueError, match=r'users_per_batch=4 .* num_clusters=3 over the 6 training identities holds 3'):
    hyper.check_user_batches(np.array([0, 0, 0, 1, 1, 2]), config)
  config.kcs_start = 10  # KCS never starts: uniform batches only
  hyper.check_user_batches(np.array([0, 0, 0, 1, 1, 2]), config)
  with pytest.raises(ValueError, match=r'users_per_batch=4 exceeds the 3 training identities'):
    hyper.check_user_batches(np.array([0, 1, 2]), config)
