"""A learned face-quality signal for frozen backbones whose feature norm carries none.

FaceCoresetNet and norm-weighted pooling read a member's quality from its raw feature norm, which follows image
quality for AdaFace-trained backbones and not for others (dlib_resnet's norms barely move when a face is blurred:
`fvjax.eval.quality`). `QualityHead` predicts quality from the frozen features themselves, trained
(`fvjax.train.quality_head`) to regress how much identity a face keeps: the cosine of its descriptor to its
identity's other clean faces, under the strong degradations of mixed-quality templates. `with_quality` then gives a
member that quality as its norm, so every norm reader (the coreset's first pick, its n^gamma distances and norm
encoding, norm-weighted pooling) reads the learned quality instead.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from fvjax.models.layers import l2_normalize


class QualityHead(nn.Module):
  """features [..., C] (raw) -> quality [...] in (0, 1): the predicted cosine of the face to its identity.

  Input: the unit feature and its log norm; one hidden layer of `hidden` GELU units; a sigmoid output."""
  hidden: int = 64

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    norm = jnp.linalg.norm(features, axis=-1, keepdims=True)
    inputs = jnp.concatenate([l2_normalize(features), jnp.log(norm + 1e-6)], axis=-1)
    hidden = nn.gelu(nn.Dense(self.hidden, name='hidden')(inputs))
    return nn.sigmoid(nn.Dense(1, name='out')(hidden))[..., 0]


def with_quality(features: jax.Array, quality: jax.Array) -> jax.Array:
  """[..., C]: each feature's direction with `quality` [...] as its norm (zero rows, padding, stay zero)."""
  return l2_normalize(features) * quality[..., None]
