"""Optimizers and learning-rate schedules from config data."""

import dataclasses
import re

import jax
import optax


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """SGD (momentum, coupled L2 weight decay as in the reference) or AdamW.

  schedule: 'constant' | 'piecewise' (multiply by `decay_factor` at each of
  `milestones`, given in steps) | 'cosine' (to 0 at `total_steps`); all after
  a linear warm-up of `warmup_steps` from 0.

  Weight decay: `weight_decay_rules` are (regex, rate) pairs searched in each
  parameter's path ('backbone/embedding/kernel', 'head/centres', ...); the
  first match sets its rate. Parameters no rule matches decay at
  `weight_decay` if they are kernels (rank >= 2) and not at all otherwise
  (BatchNorm, biases, PReLU slopes).

  frozen: a regex searched in the same paths; matching parameters are never updated (no gradient step, no decay,
  not in the gradient clipping), e.g. a pretrained part of the model. '' freezes nothing.
  """
  name: str = 'sgd'
  learning_rate: float = 0.1
  momentum: float = 0.9
  weight_decay: float = 5e-4
  schedule: str = 'piecewise'
  warmup_steps: int = 0
  milestones: tuple[int, ...] = ()
  decay_factor: float = 0.1
  grad_clip_norm: float | None = None
  weight_decay_rules: tuple[tuple[str, float], ...] = ()
  frozen: str = ''


def learning_rate_schedule(config: OptimizerConfig, total_steps: int) -> optax.Schedule:
  """Warm-up then the configured decay, as a function of the step."""
  peak = config.learning_rate
  if config.schedule == 'constant':
    decay = optax.constant_schedule(peak)
  elif config.schedule == 'piecewise':
    decay = optax.piecewise_constant_schedule(
        peak, {m - config.warmup_steps: config.decay_factor for m in config.milestones})
  elif config.schedule == 'cosine':
    decay = optax.cosine_decay_schedule(peak, max(1, total_steps - config.warmup_steps))
  else:
    raise ValueError(f"unknown schedule {config.schedule!r}; expected 'constant', 'piecewise' or 'cosine'")
  if not config.warmup_steps:
    return decay
  warmup = optax.linear_schedule(0.0, peak, config.warmup_steps)
  return optax.join_schedules([warmup, decay], [config.warmup_steps])


def _path_name(path) -> str:
  return '/'.join(str(getattr(k, 'key', k)) for k in path)


def decay_rates(params, config: OptimizerConfig):
  """The weight-decay rate of every parameter: a tree of floats shaped like `params` (see `OptimizerConfig`)."""
  rules = [(re.compile(pattern), float(rate)) for pattern, rate in config.weight_decay_rules]

  def rate(path, p):
    name = _path_name(path)
    for pattern, value in rules:
      if pattern.search(name):
        return value
    return config.weight_decay if p.ndim >= 2 else 0.0

  return jax.tree_util.tree_map_with_path(rate, params)


def _weight_decays(config: OptimizerConfig) -> list[optax.GradientTransformation]:
  """One masked `optax.add_decayed_weights` per decay rate (`decay_rates`): without rules, exactly the single
  kernel-only transform of earlier fvjax versions, so their checkpoints' optimizer states still restore."""
  if not config.weight_decay_rules:
    return [optax.add_decayed_weights(config.weight_decay, mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p))]
  rates = sorted({config.weight_decay, *(float(rate) for _, rate in config.weight_decay_rules)} - {0.0})
  return [optax.add_decayed_weights(rate, mask=lambda p, rate=rate: jax.tree.map(lambda r: r == rate,
                                                                                 decay_rates(p, config)))
          for rate in rates]


def make_optimizer(config: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
  """The optax transformation for `config` (with its schedule injected).

  SGD: coupled L2 decay (added to the gradient before momentum, as torch.optim.SGD); AdamW: decoupled decay
  (added to the Adam direction before the learning rate, as optax.adamw).
  """
  schedule = learning_rate_schedule(config, total_steps)
  if config.name == 'sgd':
    tx = optax.chain(*_weight_decays(config), optax.sgd(schedule, momentum=config.momentum))
  elif config.name == 'adamw' and not config.weight_decay_rules:
    tx = optax.adamw(schedule, weight_decay=config.weight_decay, mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p))
  elif config.name == 'adamw':
    tx = optax.chain(optax.scale_by_adam(), *_weight_decays(config), optax.scale_by_learning_rate(schedule))
  else:
    raise ValueError(f"unknown optimizer {config.name!r}; expected 'sgd' or 'adamw'")
  if config.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
  if config.frozen:
    frozen = re.compile(config.frozen)
    labels = lambda params: jax.tree_util.tree_map_with_path(
        lambda path, _: 'frozen' if frozen.search(_path_name(path)) else 'trained', params)
    tx = optax.multi_transform({'trained': tx, 'frozen': optax.set_to_zero()}, labels)
  return tx
