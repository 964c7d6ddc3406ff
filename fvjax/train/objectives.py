"""The objectives of the personalised verifiers: every verifier of a batch scores every probe of it.

`hyper_task` (a generator) and `shared_f_task` (the floor: one f for everyone) are the train loop's `Task`s.

Given logits [U, P] (user u's verifier on probe p), who owns each probe and the frozen backbone's cosine between
each enrolment and each probe, the loss is

  weighted BCE on the identity labels (positives weighted `positive_weight`, default #negatives / #positives)
  + distill_weight * mean((logit / distill_scale - (cos - distill_centre))^2)
  + norm_weight * mean ||theta||^2.

The second term (ours, beyond the paper) gives every pair of the batch a graded target: the backbone's cosine
between the two faces, on a logit scale (`distill_scale` logits per unit of cosine, zero at `distill_centre`), so a
look-alike impostor teaches more than "no" and a poor genuine photo less than "yes". 0 turns it off (the paper's
objective). The cosines are those of the generator's centred input (`teacher_cosines`).

With a shared base (and in the floor), f's shared layers can also be taught directly: `feature_distill_weight` x
`feature_distillation`, every probe's pooled features mapped by a learned linear head [c, E] (used in training only,
never part of f) towards the backbone's centred embedding of the same face. Every image then carries a target of E
numbers, not only the one bit of each pair it is in. With a linear generator (hidden=0) the head can be the
generator's own logit-kernel map (`tied_feature_head`): the map that carries the backbone's embedding into f's
feature space is then the one distillation fits on every image, so a new user's kernel is the teacher's template
in f's space (its pair-scoring with BCE tunes it, on the training people only). With `distill_only_map` as well the
pair loss tunes only that map's overall scale (with f's shared logit kernel and bias): which direction of f's
features is a user's comes from distillation alone, and with `distill_only_stem` so do f's features themselves.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fvjax.models import verifier
from fvjax.models.hypernet import WeightGenerator, head_name, logit_kernel_map, with_input_centre
from fvjax.models.layers import l2_normalize
from fvjax.train.loop import Task


def centred(embeddings: jax.Array, centre: jax.Array) -> jax.Array:
  """Embeddings [N, E] normalised, moved by `centre` [E] (the generator's input centre) and renormalised."""
  return l2_normalize(l2_normalize(embeddings) - centre)


def teacher_cosines(enrol: jax.Array, probes: jax.Array, centre: jax.Array) -> jax.Array:
  """Cosines [U, P] between the `centred` enrolment [U, E] and probe [P, E] embeddings."""
  return centred(enrol, centre) @ centred(probes, centre).T


def feature_distillation(features: jax.Array, head: jax.Array, teacher: jax.Array) -> jax.Array:
  """mean(1 - cos(features @ head, teacher)): f's pooled features [P, c], mapped by a linear head [c, E], against the
  backbone's unit embeddings [P, E] of the same faces."""
  return jnp.mean(1.0 - jnp.sum(l2_normalize(features @ head) * teacher, axis=-1))


def scale_only(x: jax.Array) -> jax.Array:
  """`x` in the forward pass; in the backward pass only its norm receives a gradient (its direction is held), so
  a loss that sees x through this trains how large x is, never which way it points."""
  norm = jnp.linalg.norm(x)
  return jax.lax.stop_gradient(x / norm) * norm


def _feature_head(rng: jax.Array, spec: verifier.VerifierSpec, embedding_size: int) -> jax.Array:
  """The distillation head [c, E]: unit-variance outputs for unit-norm features."""
  return jax.random.normal(rng, (spec.channels[-1], embedding_size))


def pair_loss(logits: jax.Array, targets: jax.Array, cosines: jax.Array, *, positive_weight: float = 0.0,
              distill_weight: float = 0.0, distill_centre: float = 0.0, distill_scale: float = 1.0,
              mask: jax.Array | None = None) -> tuple[jax.Array, dict]:
  """(loss, metrics) of logits [U, P] against identity targets [U, P] (1: the probe is the user) and the teacher's
  cosines [U, P]; mask [U, P] (optional) leaves pairs out (a probe scored against itself)."""
  mask = jnp.ones_like(logits) if mask is None else mask.astype(logits.dtype)
  positives = jnp.sum(targets * mask)
  pos = positive_weight or (jnp.sum(mask) - positives) / positives
  weights = mask * jnp.where(targets > 0, pos, 1.0)
  bce = jnp.sum(weights * optax.sigmoid_binary_cross_entropy(logits, targets)) / jnp.sum(weights)
  distill = jnp.sum(mask * (logits / distill_scale - (cosines - distill_centre))**2) / jnp.sum(mask)
  accuracy = jnp.sum(mask * ((logits > 0) == (targets > 0))) / jnp.sum(mask)
  return bce + distill_weight * distill, {'bce': bce, 'distill': distill, 'pair_accuracy': accuracy}


def hyper_task(generator: WeightGenerator, spec: verifier.VerifierSpec, embedding_size: int, batches,
               input_centre: np.ndarray | None = None, feature_distill_weight: float = 0.0,
               distill_only_stem: bool = False, tied_feature_head: bool = False, distill_only_map: bool = False,
               **objective) -> Task:
  """Every generated verifier on every probe of the batch (`objectives.pair_loss` with `objective`, its keyword
  arguments), plus the scheduled norm penalty and, with a shared base, `feature_distill_weight` x the
  `feature_distillation` of theta_0 (params gain 'feature_head' [c, E]). distill_only_stem: theta_0's layers before
  the first personal one learn from feature distillation alone (the pair loss sees their output as a constant), so
  the identities of the training batches never shape them. tied_feature_head: distillation's head is the linear
  generator's logit-kernel map; distill_only_map (with it): the pair loss sees that map through `scale_only`.
  input_centre [E]: the generator's fixed input centre
  (None: zero)."""
  if feature_distill_weight and not generator.shared_base:
    raise ValueError('feature_distill_weight teaches the shared base theta_0: it needs shared_base=True')
  if distill_only_stem and not (feature_distill_weight and generator.first_personal_layer):
    raise ValueError('distill_only_stem needs feature_distill_weight > 0 and shared layers before the personal ones')
  if tied_feature_head and not (feature_distill_weight and generator.hidden == 0
                                and tuple(generator.personal_layers) == ('logit',)):
    raise ValueError("tied_feature_head distils through the generator's logit-kernel map: it needs "
                     "feature_distill_weight > 0, hidden=0 and personal_layers=('logit',)")
  if distill_only_map and not tied_feature_head:
    raise ValueError('distill_only_map holds the direction of the distillation head in the pair loss: it needs '
                     'tied_feature_head=True')
  conv_impl = _train_conv_impl()
  centre = jnp.zeros(embedding_size) if input_centre is None else jnp.asarray(input_centre, jnp.float32)
  first = generator.first_personal_layer

  def loss(params, model_state, batch, rng):
    del rng
    seen_params = params
    if distill_only_map:
      map_name = head_name('logit/kernel')
      seen_params = {**params, map_name: {**params[map_name], 'kernel': scale_only(params[map_name]['kernel'])}}
    thetas = generator.apply({'params': seen_params}, batch['enrol'], batch.get('enrol_inputs'))  # [U, D]
    probes = batch['probes']
    if first:  # layers every user shares: once per probe
      probes = verifier.stem(params['theta_0'], probes, spec, first, conv_impl)
    seen_by_pairs = jax.lax.stop_gradient(probes) if distill_only_stem else probes
    logits = verifier.apply_many(thetas, seen_by_pairs, spec, conv_impl=conv_impl, from_layer=first)  # [U, U*m]
    targets = (batch['probe_user'][None, :] == jnp.arange(thetas.shape[0])[:, None]).astype(jnp.float32)
    cosines = teacher_cosines(batch['enrol'], batch['probe_embed'], centre)
    pair, metrics = pair_loss(logits, targets, cosines, **objective)
    norm = jnp.mean(jnp.sum(thetas**2, axis=-1))
    metrics['theta_norm2'] = norm
    total = pair + batch['norm_weight'][0] * norm
    if feature_distill_weight:
      shared = verifier.features(params['theta_0'], probes, spec, conv_impl, from_layer=first)
      head = logit_kernel_map(params) if tied_feature_head else params['feature_head']
      metrics['feature_distill'] = feature_distillation(shared, head, centred(batch['probe_embed'], centre))
      total += feature_distill_weight * metrics['feature_distill']
    return total, (model_state, metrics)

  def init(rng):
    size = (1, spec.input_size, spec.input_size, spec.in_channels)
    variables = generator.init(rng, jnp.zeros((1, embedding_size)), jnp.zeros(size) if generator.own_template else None)
    if feature_distill_weight and not tied_feature_head:
      head = _feature_head(jax.random.fold_in(rng, 1), spec, embedding_size)
      variables['params'] = {**variables['params'], 'feature_head': head}
    return variables if input_centre is None else with_input_centre(variables, input_centre)

  return Task(init=init, loss=loss, batches=batches)


def shared_f_task(spec: verifier.VerifierSpec, embedding_size: int, batches, input_centre: np.ndarray | None = None,
                  feature_distill_weight: float = 0.0, **objective) -> Task:
  """The floor: one f for everyone. Its normalised pooled features g [c] are non-negative (f's last layer is a
  ReLU), so two faces' cosine cannot go below 0; a pair (enrolment a, probe b) is scored as
  scale * <t(a), g(b)> + bias with the enrolment template t(a) = normalise(g(a) - centre) and a learned shared
  `centre` [c], which lets a template score a face below 0. The scale starts at 1: started at 10, every pair's
  logit began near 9 and the impostor pairs drove the features to zero within 60 steps (BCE stuck at ln 2, with
  or without the centre; measured). Every probe of the batch against every other, with `hyper_task`'s objective
  (its `feature_distillation` on f's features). Params {'theta': f's [D], 'centre': [c], 'similarity': (scale,
  bias)} (+ 'feature_head' [c, E]); `shared_f_enrol` makes per-user thetas."""
  conv_impl = _train_conv_impl()
  centre = jnp.zeros(embedding_size) if input_centre is None else jnp.asarray(input_centre, jnp.float32)
  require_normalized_features(spec)

  def loss(params, model_state, batch, rng):
    del rng
    g = verifier.features(params['theta'], batch['probes'], spec, conv_impl)  # [P, c], unit (spec checked)
    scale, bias = params['similarity'][0], params['similarity'][1]
    logits = scale * l2_normalize(g - params['centre']) @ g.T + bias
    targets = (batch['probe_user'][:, None] == batch['probe_user'][None, :]).astype(jnp.float32)
    cosines = teacher_cosines(batch['probe_embed'], batch['probe_embed'], centre)
    total, metrics = pair_loss(logits, targets, cosines, mask=1 - jnp.eye(len(g)), **objective)
    if feature_distill_weight:
      metrics['feature_distill'] = feature_distillation(g, params['feature_head'],
                                                        centred(batch['probe_embed'], centre))
      total += feature_distill_weight * metrics['feature_distill']
    return total, (model_state, metrics)

  def init(rng):
    params = {'theta': verifier.init_theta(rng, spec), 'centre': jnp.zeros(spec.channels[-1]),
              'similarity': jnp.array([1.0, 0.0])}
    if feature_distill_weight:
      params['feature_head'] = _feature_head(jax.random.fold_in(rng, 1), spec, embedding_size)
    return {'params': params}

  return Task(init=init, loss=loss, batches=batches)


def require_normalized_features(spec: verifier.VerifierSpec) -> None:
  if not spec.normalize_features:
    raise ValueError("method='shared_f' compares f's features by cosine: set verifier.normalize_features=True")


def shared_f_enrol(params: dict, inputs: jax.Array, spec: verifier.VerifierSpec) -> jax.Array:
  """Per-user thetas [U, D] of the floor from enrolment inputs [U, s, s, 3] (or [U, n, s, s, 3]: the mean of the n
  normalised features, renormalised): f's shared layers, and a logit layer whose kernel is scale * t(enrolment) and
  whose bias is the shared bias, so f(theta_u, x) = scale * <t(enrolment), g(x)> + bias (see `shared_f_task`)."""
  shared = verifier.unflatten(params['theta'], spec)
  g = verifier.enrolment_features(params['theta'], inputs, spec)
  kernels = params['similarity'][0] * l2_normalize(g - params['centre'])
  return jax.vmap(lambda k: verifier.flatten({**shared, 'logit/kernel': k,
                                              'logit/bias': params['similarity'][1]}, spec))(kernels)


def _train_conv_impl() -> str:
  # im2col convolutions on CPU: their gradient w.r.t. the generated weights is 15x faster there.
  return 'matmul' if jax.default_backend() == 'cpu' else 'xla'
