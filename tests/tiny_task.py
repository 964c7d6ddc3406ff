"""A tiny BatchNorm CNN task on synthetic data for exercising the train loop (unit tests only)."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fvjax.train import Task

BATCH = 16


class TinyNet(nn.Module):

  @nn.compact
  def __call__(self, x, train):
    x = nn.Conv(4, (3, 3))(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    return nn.Dense(3)(nn.relu(x).mean(axis=(1, 2)))


def batch_at(step: int, scale: float = 1.0) -> dict:
  rng = np.random.default_rng(step)
  return {'x': (scale * rng.normal(size=(BATCH, 8, 8, 2))).astype(np.float32),
          'y': rng.integers(0, 3, BATCH).astype(np.int32)}


def tiny_task(scale: float = 1.0) -> Task:
  model = TinyNet()

  def loss(params, model_state, batch, rng):
    x = batch['x'] + 0.01 * jax.random.normal(rng, batch['x'].shape)  # uses the step RNG
    logits, new_state = model.apply({'params': params, **model_state}, x, train=True, mutable=['batch_stats'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch['y']).mean(), (new_state, {})

  return Task(init=lambda rng: model.init(rng, jnp.zeros((1, 8, 8, 2)), train=False), loss=loss,
              batches=lambda start: (batch_at(s, scale) for s in itertools.count(start)))
