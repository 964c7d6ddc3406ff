"""Hypernetwork generator h_gen: enrolment embedding -> weights theta of the tiny verifier f.

h = h_gen o h_bb: the frozen backbone h_bb embeds the enrolment image(s);
h_gen (trained) maps the embedding to theta. Our design (the paper's generator
is not reproduced; every size is a field):

  L2-normalised embedding [E] -> Dense(hidden) -> ReLU -> Dense(hidden) -> ReLU
  -> LayerNorm -> one linear head per tensor of f -> raw values, each kernel
  scaled by sqrt(2 / fan_in) (depthwise pooling weights by the mean's 1 / (m*m), biases by `bias_scale`).

The LayerNorm gives the heads unit-variance inputs, so (LeCun-initialised)
heads emit unit-variance values and the fan-in scaling turns them into
He-initialised verifier layers: a fresh generator already emits trainable nets.
With hidden=0 the generator is linear: the heads read the centred embedding times sqrt(E) (unit-variance inputs,
as the LayerNorm gives them), with no trunk and no LayerNorm.
Enrolment from several images averages their normalised embeddings (then
renormalises) before h_gen.

Two forms (`shared_base`):
- False, the paper's: every weight of f is generated from the embedding.
- True: theta_u = theta_0 + delta(e_u). theta_0 is one learned f shared by every user (He-initialised); the
  generator emits only delta for the tensors of `personal_layers` (others stay theta_0), so what all users need is
  learned once and the embedding only steers the personal layers (the abstract: the hypernetwork exists to share
  information between people). The output is still a whole theta per user: a device runs the same f.

With a shared base, `own_template` also enrols a user the way the shared-f floor does: the logit kernel gains
template_scale * normalise(g_0(x) - template_centre), where g_0(x) are theta_0's own pooled features of the
enrolment image(s) x (two learned parameters: a scalar and a [c] centre). The generated part then only has to add
what the backbone's embedding knows beyond f's own view of the face; with a zero generator head the verifier is the
floor's.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from fvjax.models.layers import l2_normalize
from fvjax.models.verifier import VerifierSpec, enrolment_features, flatten, init_theta


class WeightGenerator(nn.Module):
  """embeddings [U, E] -> thetas [U, num_params] of `spec`'s verifier.

  The normalised embedding is first moved by a fixed `input_centre` [E] (not trained: the gradient is stopped and
  weight decay skips vectors) and renormalised. Zero by default; training sets it to the mean training embedding
  (`with_input_centre`), because some backbones' embeddings share one dominant direction (dlib_resnet's unit
  descriptors average to a vector of norm 0.92 on CelebA): without it a fresh generator sees near-identical inputs
  for every user and emits one verifier for all, whose BCE never leaves ln 2.
  hidden: the trunk's width (0: a linear generator); shared_base, personal_layers, own_template: see the module doc
  (layers named as in `VerifierSpec.layer_names`);
  with own_template the call takes f's inputs of the enrolment images too, enrol_inputs [U, s, s, 3] or
  [U, n, s, s, 3] (n images each, averaged as `verifier.enrolment_features` does).
  """
  spec: VerifierSpec = VerifierSpec()
  hidden: int = 256
  bias_scale: float = 0.1
  shared_base: bool = False
  personal_layers: tuple[str, ...] = ('logit',)
  own_template: bool = False

  def setup(self):
    unknown = set(self.personal_layers) - set(self.spec.layer_names)
    if self.shared_base and (unknown or not self.personal_layers):
      raise ValueError(f'personal_layers={self.personal_layers} must name some of f\'s layers {self.spec.layer_names}')
    if self.own_template and not self.shared_base:
      raise ValueError("own_template enrols with theta_0's features: it needs shared_base=True")

  def generated(self, name: str) -> bool:
    """Whether tensor `name` of theta is (partly) generated per user."""
    return not self.shared_base or name.split('/')[0] in self.personal_layers

  @property
  def first_personal_layer(self) -> int:
    """Index of f's first layer that differs between users: the layers before it are theta_0's for everyone."""
    return 0 if not self.shared_base else min(self.spec.layer_names.index(n) for n in self.personal_layers)

  def output_scale(self, name: str) -> float:
    """The size of a generated tensor's unit-variance raw values: He for convolution and logit kernels, the mean's
    1 / (m*m) for depthwise pooling weights, `bias_scale` for biases."""
    if name == 'pool/kernel':
      return 1.0 / self.spec.fan_in(name)
    return math.sqrt(2.0 / self.spec.fan_in(name)) if name.endswith('kernel') else self.bias_scale

  @nn.compact
  def __call__(self, embeddings: jax.Array, enrol_inputs: jax.Array | None = None) -> jax.Array:
    centre = jax.lax.stop_gradient(self.param('input_centre', nn.initializers.zeros, (embeddings.shape[-1],)))
    h = l2_normalize(l2_normalize(embeddings) - centre)
    if self.hidden:
      h = nn.relu(nn.Dense(self.hidden, name='trunk0')(h))
      h = nn.relu(nn.Dense(self.hidden, name='trunk1')(h))
      h = nn.LayerNorm(name='trunk_norm')(h)
    else:
      h = h * math.sqrt(h.shape[-1])
    parts = []
    for name, shape in self.spec.layer_shapes():
      size = math.prod(shape)
      if not self.generated(name):
        parts.append(jnp.zeros((embeddings.shape[0], size), h.dtype))
        continue
      raw = nn.Dense(size, kernel_init=nn.initializers.lecun_normal(), name=head_name(name))(h)
      parts.append(raw * self.output_scale(name))
    thetas = jnp.concatenate(parts, axis=-1)
    if self.shared_base:
      theta_0 = self.param('theta_0', lambda rng: init_theta(rng, self.spec))
      thetas = thetas + theta_0[None]
    if self.own_template:
      if enrol_inputs is None:
        raise ValueError('this generator enrols from f\'s inputs of the enrolment images too: pass enrol_inputs')
      scale = self.param('template_scale', nn.initializers.ones, ())
      centre = self.param('template_centre', nn.initializers.zeros, (self.spec.channels[-1],))
      kernels = scale * l2_normalize(enrolment_features(theta_0, enrol_inputs, self.spec) - centre)  # [U, c]
      others = {name: jnp.zeros(shape, thetas.dtype) for name, shape in self.spec.layer_shapes()}
      thetas = thetas + jax.vmap(lambda k: flatten({**others, 'logit/kernel': k}, self.spec))(kernels)
    return thetas


def head_name(tensor: str) -> str:
  """The generator's Dense head that emits theta's tensor `tensor` ('conv0/kernel' -> 'head_conv0_kernel')."""
  return f'head_{tensor.replace("/", "_")}'


def logit_kernel_map(params: dict) -> jax.Array:
  """[c, E]: how a linear generator's (hidden=0) logit kernel reads the centred embedding (up to its fixed scales):
  the generated kernel of embedding e is proportional to this map times centred(e)."""
  return params[head_name('logit/kernel')]['kernel'].T


def with_input_centre(variables: dict, centre: jax.Array) -> dict:
  """`variables` of a WeightGenerator with its input_centre [E] replaced by `centre`."""
  return {**variables, 'params': {**variables['params'], 'input_centre': jnp.asarray(centre, jnp.float32)}}


def enrolment_embedding(embeddings: jax.Array) -> jax.Array:
  """One user's enrolment embedding from several images [n, E] -> [E] (mean of normalised, renormalised)."""
  if embeddings.ndim != 2 or embeddings.shape[0] == 0:
    raise ValueError(f'enrolment needs at least one image embedding [n, E], got shape {embeddings.shape}')
  return l2_normalize(jnp.mean(l2_normalize(embeddings), axis=0))
