import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fvjax.models import heads

COS = jnp.array([[0.6, 0.2, -0.1], [-0.95, 0.3, 0.5]])
LABELS = jnp.array([0, 0])


def test_arcface_hand_computed():
  logits = heads.arcface_logits(COS, LABELS, s=64.0, m=0.5)
  # row 0: cos(acos(0.6) + 0.5) = 0.6 cos 0.5 - 0.8 sin 0.5
  target0 = 0.6 * math.cos(0.5) - 0.8 * math.sin(0.5)
  # row 1: theta + m > pi (cos -0.95 < cos(pi - 0.5)), so cos - m sin m
  target1 = -0.95 - 0.5 * math.sin(0.5)
  expected = 64 * np.array([[target0, 0.2, -0.1], [target1, 0.3, 0.5]])
  np.testing.assert_allclose(logits, expected, rtol=1e-5)
  assert abs(target0 - 0.14301) < 1e-4


def test_arcface_easy_margin_keeps_negative_cosines():
  logits = heads.arcface_logits(jnp.array([[-0.3, 0.1]]), jnp.array([0]), s=1.0, m=0.5, easy_margin=True)
  np.testing.assert_allclose(logits, [[-0.3, 0.1]], rtol=1e-6)


def test_cosface_hand_computed():
  logits = heads.cosface_logits(COS, jnp.array([0, 2]), s=64.0, m=0.35)
  np.testing.assert_allclose(logits, 64 * np.array([[0.25, 0.2, -0.1], [-0.95, 0.3, 0.15]]), rtol=1e-5)


def test_adaface_hand_computed():
  s, m, h, eps = 64.0, 0.4, 0.333, 1e-3
  norms = jnp.array([20.0, 40.0])
  logits = heads.adaface_logits(jnp.array([[0.6, 0.2], [0.6, 0.2]]), jnp.array([0, 0]), norms, jnp.array(20.0),
                                jnp.array(10.0), s=s, m=m, h=h)
  z1 = h * 20.0 / (10.0 + eps)
  expected = [
      [s * (0.6 - m), s * 0.2],  # average quality: z = 0 -> plain CosFace margin
      [s * (math.cos(math.acos(0.6) - m * z1) - (m + m * z1)), s * 0.2],
  ]
  np.testing.assert_allclose(logits, expected, rtol=1e-5)


def test_adaface_head_updates_norm_ema_only_in_training():
  head = heads.MarginHead(3, heads.MarginConfig(kind='adaface', t_alpha=0.01))
  emb = jnp.array([[3.0, 4.0], [6.0, 8.0]])  # norms 5, 10
  variables = head.init(jax.random.key(0), emb, jnp.array([0, 1]), train=False)
  assert float(variables['batch_stats']['norm_mean']) == 20.0
  _, new = head.apply(variables, emb, jnp.array([0, 1]), train=True, mutable=['batch_stats'])
  np.testing.assert_allclose(new['batch_stats']['norm_mean'], 0.01 * 7.5 + 0.99 * 20.0, rtol=1e-6)
  np.testing.assert_allclose(new['batch_stats']['norm_std'], 0.01 * np.std([5.0, 10.0], ddof=1) + 0.99 * 100.0,
                             rtol=1e-6)


def test_adaface_batch_of_one_keeps_the_std_ema_finite():
  head = heads.MarginHead(3, heads.MarginConfig(kind='adaface', t_alpha=0.01))
  emb = jnp.array([[3.0, 4.0]])  # norm 5
  variables = head.init(jax.random.key(0), emb, jnp.array([0]), train=False)
  logits, new = head.apply(variables, emb, jnp.array([0]), train=True, mutable=['batch_stats'])
  np.testing.assert_allclose(new['batch_stats']['norm_mean'], 0.01 * 5.0 + 0.99 * 20.0, rtol=1e-6)
  assert float(new['batch_stats']['norm_std']) == 100.0 and np.isfinite(logits).all()


@pytest.mark.parametrize('kind', ['arcface', 'cosface', 'adaface'])
def test_margin_head_lowers_only_the_target_logit(kind):
  head = heads.MarginHead(4, heads.MarginConfig(kind=kind, s=10.0))
  emb = jax.random.normal(jax.random.key(0), (5, 8))
  labels = jnp.array([0, 1, 2, 3, 1])
  variables = head.init(jax.random.key(1), emb, labels, train=False)
  logits = head.apply(variables, emb, labels, train=False)
  centres = variables['params']['centres']
  cos = (emb / jnp.linalg.norm(emb, axis=1, keepdims=True)) @ (centres / jnp.linalg.norm(centres, axis=0))
  off_target = ~np.asarray(jax.nn.one_hot(labels, 4, dtype=bool))
  np.testing.assert_allclose(np.asarray(logits)[off_target], 10.0 * np.asarray(cos)[off_target], rtol=1e-5, atol=1e-5)
  on_target = np.asarray(logits)[~off_target]
  assert np.all(on_target < 10.0 * np.asarray(cos)[~off_target] + 1e-5)
  grads = jax.grad(lambda p: head.apply({**variables, 'params': p}, emb, labels, train=False).sum())(variables['params'])
  assert np.isfinite(grads['centres']).all() and np.abs(grads['centres']).sum() > 0
