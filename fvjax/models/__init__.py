"""Face models: backbones by name, margin heads, and complexity counters."""

import jax
import jax.numpy as jnp

from fvjax.models.complexity import count_madds, count_madds_of, count_params
from fvjax.models.layers import l2_normalize
from fvjax.models.seesaw import INPUT_SHAPE, SPECS, FaceNet, FaceNetSpec, Stage

BACKBONES = tuple(SPECS)


def backbone(name: str, embedding_size: int = 512, **kwargs) -> FaceNet:
  """Returns the backbone `name` (one of `BACKBONES`) as a `FaceNet` module.

  kwargs override FaceNet fields, e.g. activation='hard_swish' or dtype=jnp.bfloat16.
  """
  if name not in SPECS:
    raise ValueError(f'unknown backbone {name!r}; expected one of {BACKBONES}')
  spec, activation = SPECS[name]
  return FaceNet(spec=spec, embedding_size=embedding_size, **{'activation': activation, **kwargs})


def init_backbone(module: FaceNet, rng: jax.Array) -> dict:
  """Variables ({'params', 'batch_stats'}) of `module` for 112x112x3 inputs."""
  return module.init(rng, jnp.zeros((1, *INPUT_SHAPE), jnp.float32), train=False)


__all__ = [
    'BACKBONES', 'FaceNet', 'FaceNetSpec', 'INPUT_SHAPE', 'Stage', 'backbone', 'count_madds', 'count_madds_of',
    'count_params', 'init_backbone', 'l2_normalize'
]
