"""Margin-softmax heads: ArcFace, CosFace and AdaFace.

The margin functions are pure: they take the cosine matrix between normalised
embeddings and class centres ([B, K]) and integer labels ([B]) and return the
scaled logits ([B, K]) to feed softmax cross-entropy. `MarginHead` owns the
class-centre matrix (and, for AdaFace, the feature-norm EMA in the
'batch_stats' collection) and calls them.
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from fvjax.models.layers import l2_normalize


def _target_mask(labels: jax.Array, num_classes: int) -> jax.Array:
  return jax.nn.one_hot(labels, num_classes, dtype=bool)


def arcface_logits(cos: jax.Array, labels: jax.Array, s: float = 64.0, m: float = 0.5,
                   easy_margin: bool = False) -> jax.Array:
  """ArcFace (arXiv 1801.07698): s * cos(theta + m) on the target class, s * cos(theta) elsewhere.

  Where theta + m would pass pi the target logit falls back to cos(theta) - m*sin(m)
  (monotone continuation, as insightface); with `easy_margin` it is cos(theta)
  whenever cos(theta) <= 0.
  """
  cos = jnp.clip(cos, -1.0, 1.0)
  sin = jnp.sqrt(jnp.clip(1.0 - cos**2, 0.0, 1.0))
  cos_m = cos * math.cos(m) - sin * math.sin(m)
  if easy_margin:
    target = jnp.where(cos > 0, cos_m, cos)
  else:
    target = jnp.where(cos > math.cos(math.pi - m), cos_m, cos - math.sin(m) * m)
  return s * jnp.where(_target_mask(labels, cos.shape[-1]), target, cos)


def cosface_logits(cos: jax.Array, labels: jax.Array, s: float = 64.0, m: float = 0.35) -> jax.Array:
  """CosFace (arXiv 1801.09414): s * (cos(theta) - m) on the target class, s * cos(theta) elsewhere."""
  cos = jnp.clip(cos, -1.0, 1.0)
  return s * jnp.where(_target_mask(labels, cos.shape[-1]), cos - m, cos)


def adaface_logits(cos: jax.Array, labels: jax.Array, norms: jax.Array, norm_mean: jax.Array, norm_std: jax.Array,
                   s: float = 64.0, m: float = 0.4, h: float = 0.333, eps: float = 1e-3) -> jax.Array:
  """AdaFace (arXiv 2204.00964) with feature norms as image quality.

  z = clip(h * (norm - mean) / (std + eps), -1, 1); on the target class
  theta' = clip(theta - m z, eps, pi - eps) and the logit is s * (cos theta' - (m + m z));
  other classes keep s * cos theta. `norms` [B] are treated as constants.
  """
  cos = jnp.clip(cos, -1.0 + eps, 1.0 - eps)
  z = jax.lax.stop_gradient(jnp.clip(h * (norms - norm_mean) / (norm_std + eps), -1.0, 1.0))[:, None]
  theta = jnp.clip(jnp.arccos(cos) - m * z, eps, math.pi - eps)
  target = jnp.cos(theta) - (m + m * z)
  return s * jnp.where(_target_mask(labels, cos.shape[-1]), target, cos)


@dataclasses.dataclass(frozen=True)
class MarginConfig:
  """Which margin and its hyper-parameters. kind: 'arcface' | 'cosface' | 'adaface'.

  m=None picks the method's published default (ArcFace 0.5, CosFace 0.35, AdaFace 0.4).
  """
  kind: str = 'arcface'
  s: float = 64.0
  m: float | None = None
  easy_margin: bool = False  # ArcFace only
  h: float = 0.333  # AdaFace only
  t_alpha: float = 0.01  # AdaFace only: EMA rate of the batch norm statistics


DEFAULT_MARGIN = {'arcface': 0.5, 'cosface': 0.35, 'adaface': 0.4}


class MarginHead(nn.Module):
  """Class centres [E, K] and a margin softmax over them.

  __call__(embeddings [B, E] un-normalised, labels [B], train) -> logits [B, K].
  AdaFace keeps the EMA of the batch's feature-norm mean/std in 'batch_stats'
  (initialised 20 / 100 as the AdaFace reference) and updates it only when train.
  """
  num_classes: int
  config: MarginConfig = MarginConfig()

  @nn.compact
  def __call__(self, embeddings: jax.Array, labels: jax.Array, train: bool) -> jax.Array:
    cfg = self.config
    if cfg.kind not in DEFAULT_MARGIN:
      raise ValueError(f'unknown margin {cfg.kind!r}; expected one of {sorted(DEFAULT_MARGIN)}')
    m = DEFAULT_MARGIN[cfg.kind] if cfg.m is None else cfg.m
    centres = self.param('centres', nn.initializers.normal(0.01), (embeddings.shape[-1], self.num_classes))
    cos = l2_normalize(embeddings) @ l2_normalize(centres, axis=0)
    if cfg.kind == 'arcface':
      return arcface_logits(cos, labels, cfg.s, m, cfg.easy_margin)
    if cfg.kind == 'cosface':
      return cosface_logits(cos, labels, cfg.s, m)
    norms = jax.lax.stop_gradient(jnp.clip(jnp.linalg.norm(embeddings, axis=-1), 1e-3, 100.0))
    mean = self.variable('batch_stats', 'norm_mean', lambda: jnp.array(20.0))
    std = self.variable('batch_stats', 'norm_std', lambda: jnp.array(100.0))
    if train and not self.is_initializing():
      mean.value = cfg.t_alpha * jnp.mean(norms) + (1 - cfg.t_alpha) * mean.value
      # A batch of one has no spread (torch's unbiased std is NaN there and would poison the EMA): keep the old one.
      batch_std = jnp.std(norms, ddof=1) if norms.shape[0] > 1 else std.value
      std.value = cfg.t_alpha * batch_std + (1 - cfg.t_alpha) * std.value
    return adaface_logits(cos, labels, norms, mean.value, std.value, cfg.s, m, cfg.h)
