"""Face models: backbones by name, margin heads, and complexity counters."""

import jax
import jax.numpy as jnp

from fvjax.models.complexity import count_flops, count_macs_of, count_params
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


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """x / max(||x||, eps) along `axis`; its gradient is finite at x = 0 (where it is 0)."""
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=True), eps * eps))


__all__ = [
    'BACKBONES', 'FaceNet', 'FaceNetSpec', 'INPUT_SHAPE', 'Stage', 'backbone', 'count_flops', 'count_macs_of',
    'count_params', 'init_backbone', 'l2_normalize'
]
