"""FaceCoresetNet (Shapira and Keller, AAAI 2024, arXiv 2308.14075): set aggregation by a differentiable coreset.

A face set (template) is T per-image features x_i = n_i u_i from a frozen
backbone (un-normalised; the norm n_i is the image quality). The aggregator

1. picks a coreset of K members by quality-aware farthest-point sampling
   (`farthest_point_sample`): the first pick is the highest-quality face, every
   later pick the member farthest from the coreset under
   d_j = n_j^gamma * (1 - cos(x_j, coreset)) / 2 (gamma learnable). In training
   each pick is a hard straight-through Gumbel-softmax, so gamma learns through
   the selection; at inference it is an exact argmax (ties to the first index);
2. lets the coreset attend to itself and to the whole set (one attention block,
   `CoresetAggregator`), with the feature norms encoded sinusoidally;
3. averages the refined coreset into one descriptor.

The cost is O(T K C) + O(K^2 C): linear in the set size T.

Variable-size sets share a batch through a boolean mask [B, T]; masked
(padding) members are never picked and never attended to, so padding leaves
the result unchanged. A set with fewer valid members than K uses all of them
(K_eff = min(K, T_valid), as the reference), each exactly once.

Where this follows the reference code (ligaripash/FaceCoresetNet, net_template.py)
and where it chooses:
- Followed: gamma init 0.01; first pick by norm; running-min distance; training
  tau = 1 and logit scale 1; sinusoidal norm encoding (temperature 10000,
  interleaved sin/cos) + one shared LayerNorm; the block's wiring
  q = LN1(C + E_C + SA(C + E_C)); o = LN2(C + CA(q, X + E_X, X)); C' = C + o; no FFN.
- Chosen: members already in the coreset are excluded from later picks (the
  reference relies on their distance being 0, which repeats a member when a set
  holds exact duplicates); the reference's unused modules (a second block,
  quality Linear, UR centre) are not built.
"""

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fvjax.models.layers import l2_normalize
from fvjax.models.quality import QualityHead, with_quality

_NORM_EPS = 1e-6
_LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default, which the reference's LayerNorms use


def check_sets(features: np.ndarray, mask: np.ndarray | None = None) -> None:
  """Raises ValueError naming the first problem of a batch of sets; returns None when it is valid.

  features [B, T, C] (un-normalised), mask [B, T] bool (True = member). Checked:
  rank and shapes, empty batches and sets (T = 0), sets whose members are all
  masked, and members that are not finite or have zero norm (no direction, no quality).
  """
  features = np.asarray(features)
  if features.ndim != 3:
    raise ValueError(f'sets must be features [B, T, C]; got shape {features.shape}')
  b, t, _ = features.shape
  if b == 0 or t == 0:
    raise ValueError(f'empty set batch: features have shape {features.shape}; a set needs at least one face')
  mask = np.ones((b, t), bool) if mask is None else np.asarray(mask, bool)
  if mask.shape != (b, t):
    raise ValueError(f'mask shape {mask.shape} does not match the sets [B, T] = {(b, t)}')
  empty = np.flatnonzero(~mask.any(axis=1))
  if empty.size:
    raise ValueError(f'sets {empty[:10].tolist()} have every member masked; a set needs at least one face')
  bad = mask & ~np.isfinite(features).all(axis=-1)
  if bad.any():
    s, m = np.argwhere(bad)[0]
    raise ValueError(f'set {s}, member {m}: feature holds NaN or inf ({int(bad.sum())} such members); '
                     'check the backbone and the images it was given')
  zero = mask & (np.linalg.norm(features, axis=-1) <= _NORM_EPS)
  if zero.any():
    s, m = np.argwhere(zero)[0]
    raise ValueError(f'set {s}, member {m}: feature has zero norm, so neither direction nor quality')


def safe_norm(x: jax.Array) -> jax.Array:
  """||x|| over the last axis [...]; clamped at a tiny floor so that its gradient is finite at x = 0."""
  return jnp.sqrt(jnp.maximum(jnp.sum(x * x, axis=-1), _NORM_EPS**2))


def quality_distance(unit: jax.Array, pick: jax.Array, norms: jax.Array, gamma: jax.Array) -> jax.Array:
  """n_j^gamma * (1 - cos(x_j, pick)) / 2: [B, T] from unit features [B, T, C], a pick [B, C], norms [B, T]."""
  cos = jnp.einsum('btc,bc->bt', unit, l2_normalize(pick))
  return norms**gamma * (1.0 - cos) / 2.0


def _select(logits: jax.Array, available: jax.Array, rng: jax.Array | None, tau: float) -> tuple[jax.Array, jax.Array]:
  """One pick per set: (selection weights [B, T], whether the set had a member to pick [B]).

  rng None: exact one-hot argmax over the available members (ties to the first index).
  Otherwise a hard straight-through Gumbel-softmax: one-hot forward, softmax gradient.
  """
  any_available = available.any(axis=-1)
  masked = jnp.where(available, logits, -jnp.inf)
  masked = jnp.where(any_available[:, None], masked, 0.0)  # nothing left: a harmless row, dropped below
  if rng is None:
    weights = jax.nn.one_hot(jnp.argmax(masked, axis=-1), logits.shape[-1], dtype=logits.dtype)
  else:
    soft = jax.nn.softmax((masked + jax.random.gumbel(rng, masked.shape, logits.dtype)) / tau, axis=-1)
    hard = jax.nn.one_hot(jnp.argmax(soft, axis=-1), logits.shape[-1], dtype=logits.dtype)
    weights = hard + soft - jax.lax.stop_gradient(soft)
  return weights * any_available[:, None], any_available


def farthest_point_sample(features: jax.Array, mask: jax.Array, k: int, gamma: jax.Array,
                          rng: jax.Array | None = None, tau: float = 1.0,
                          scale: float = 1.0) -> tuple[jax.Array, jax.Array]:
  """Quality-aware farthest-point sampling of k members per set.

  features [B, T, C] un-normalised, mask [B, T] bool, gamma scalar.
  Returns (selection [B, k, T]: one-hot rows (straight-through in training)
  so that coreset = selection @ features; picked [B, k] bool: False for the
  picks beyond a set's valid size). rng None = inference (exact argmax).
  Training logits are `scale` * (norms | distances) with temperature `tau`.
  """
  norms = safe_norm(features)
  safe_norms = jnp.where(mask, jnp.maximum(norms, _NORM_EPS), 1.0)  # padding: no 0**gamma in the gradient
  unit = features / safe_norms[..., None]
  keys = [None] * k if rng is None else list(jax.random.split(rng, k))

  first, picked0 = _select(scale * norms, mask, keys[0], tau)
  taken = jax.lax.stop_gradient(first) > 0.5
  distance = quality_distance(unit, jnp.einsum('bt,btc->bc', first, features), safe_norms, gamma)

  def pick(carry, key):
    distance, taken = carry
    weights, picked = _select(scale * distance, mask & ~taken, key, tau)
    new = quality_distance(unit, jnp.einsum('bt,btc->bc', weights, features), safe_norms, gamma)
    return (jnp.minimum(distance, new), taken | (jax.lax.stop_gradient(weights) > 0.5)), (weights, picked)

  if k == 1:
    return first[:, None], picked0[:, None]
  xs = None if rng is None else jnp.stack(keys[1:])
  _, (weights, picked) = jax.lax.scan(pick, (distance, taken), xs, length=k - 1)
  selection = jnp.concatenate([first[:, None], jnp.moveaxis(weights, 0, 1)], axis=1)
  return selection, jnp.concatenate([picked0[:, None], picked.T], axis=1)


def norm_encoding(norms: jax.Array, dim: int, temperature: float = 10000.0) -> jax.Array:
  """Sinusoidal encoding [..., dim] of scalar norms [...]: sin/cos interleaved over 2 pi n / temperature^(2 floor(i/2) / dim)."""
  i = jnp.arange(dim)
  angles = 2 * math.pi * norms[..., None] / temperature**(2 * (i // 2) / dim)
  return jnp.where(i % 2 == 0, jnp.sin(angles), jnp.cos(angles))


@dataclasses.dataclass(frozen=True)
class SetOutput:
  """What the aggregator returns for a batch of B sets of T members, coreset size K."""
  aggregate: jax.Array  # [B, C] un-normalised mean of the refined coreset
  selection: jax.Array  # [B, K, T] one-hot picks
  picked: jax.Array  # [B, K] bool: pick k exists (k < valid set size)

  @property
  def descriptor(self) -> jax.Array:
    """[B, C] L2-normalised set descriptor."""
    return l2_normalize(self.aggregate)

  @property
  def quality(self) -> jax.Array:
    """[B] the descriptor's norm (the set's quality, used by AdaFace)."""
    return jnp.linalg.norm(self.aggregate, axis=-1)


jax.tree_util.register_dataclass(SetOutput, data_fields=['aggregate', 'selection', 'picked'], meta_fields=[])


class CoresetAggregator(nn.Module):
  """FaceCoresetNet: sets [B, T, C] + mask [B, T] -> `SetOutput` (descriptor [B, C]).

  Defaults follow the released training recipe: K = 3, 8 heads, dropout 0.1
  (C = 512 with the reference backbone; any C divisible by num_heads works).
  RNG streams when train: 'gumbel' (the picks) and 'dropout'.
  quality: 'norm' (the reference: a member's quality is its feature norm) or 'learned' (a `QualityHead` of
  `quality_hidden` units, pretrained and frozen, gives each member its quality as its norm first: `with_quality`).
  """
  coreset_size: int = 3
  num_heads: int = 8
  dropout_rate: float = 0.1
  gamma_init: float = 0.01
  gumbel_tau: float = 1.0
  gumbel_scale: float = 1.0
  quality: str = 'norm'
  quality_hidden: int = 64

  @nn.compact
  def __call__(self, features: jax.Array, mask: jax.Array | None = None, train: bool = False) -> SetOutput:
    if features.ndim != 3 or features.shape[0] == 0 or features.shape[1] == 0:
      raise ValueError(f'sets must be features [B, T, C] with B, T >= 1; got shape {features.shape}')
    b, t, c = features.shape
    mask = jnp.ones((b, t), bool) if mask is None else mask.astype(bool)
    if mask.shape != (b, t):
      raise ValueError(f'mask shape {mask.shape} does not match the sets [B, T] = {(b, t)}')
    if self.coreset_size < 1:
      raise ValueError(f'coreset_size must be >= 1, got {self.coreset_size}')
    if self.quality == 'learned':
      features = with_quality(features, QualityHead(self.quality_hidden, name='quality_head')(features))
    elif self.quality != 'norm':
      raise ValueError(f"quality must be 'norm' or 'learned', got {self.quality!r}")
    gamma = self.param('gamma', nn.initializers.constant(self.gamma_init), ())
    rng = self.make_rng('gumbel') if train else None
    selection, picked = farthest_point_sample(features, mask, self.coreset_size, gamma, rng, self.gumbel_tau,
                                              self.gumbel_scale)
    coreset = jnp.einsum('bkt,btc->bkc', selection, features)

    layer_norm = functools.partial(nn.LayerNorm, epsilon=_LAYER_NORM_EPS)
    encode = layer_norm(name='norm_encoding_norm')
    set_encoding = encode(norm_encoding(safe_norm(features), c))
    coreset_encoding = encode(norm_encoding(safe_norm(coreset), c))

    def attention(name):
      return nn.MultiHeadDotProductAttention(num_heads=self.num_heads, dropout_rate=self.dropout_rate,
                                             deterministic=not train, name=name)

    dropout = nn.Dropout(self.dropout_rate, deterministic=not train)
    q = coreset + coreset_encoding
    self_mask = picked[:, None, :, None] & picked[:, None, None, :]
    q = layer_norm(name='self_attention_norm')(q + dropout(attention('self_attention')(q, mask=self_mask)))
    cross = attention('cross_attention')(q, inputs_k=features + set_encoding, inputs_v=features,
                                         mask=mask[:, None, None, :])
    refined = coreset + layer_norm(name='cross_attention_norm')(coreset + dropout(cross))

    weights = picked.astype(refined.dtype)[..., None]
    aggregate = jnp.sum(refined * weights, axis=1) / jnp.sum(weights, axis=1)
    return SetOutput(aggregate=aggregate, selection=selection, picked=picked)


def mean_pool(features: jax.Array, mask: jax.Array) -> jax.Array:
  """Baseline: [B, C] L2-normalised mean of the members' L2-normalised features (quality ignored)."""
  unit = l2_normalize(features) * mask[..., None]
  return l2_normalize(jnp.sum(unit, axis=1))


def norm_weighted_pool(features: jax.Array, mask: jax.Array) -> jax.Array:
  """Baseline: [B, C] L2-normalised mean of the un-normalised features (each member weighted by its norm)."""
  return l2_normalize(jnp.sum(features * mask[..., None], axis=1))
