"""Optimizers and learning-rate schedules from config data."""

import dataclasses

import jax
import optax


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """SGD (momentum, coupled L2 weight decay as in the reference) or AdamW.

  schedule: 'constant' | 'piecewise' (multiply by `decay_factor` at each of
  `milestones`, given in steps) | 'cosine' (to 0 at `total_steps`); all after
  a linear warm-up of `warmup_steps` from 0. Weight decay applies to kernels
  only (rank >= 2), not to BatchNorm, biases or PReLU slopes.
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


def _decay_mask(params):
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(config: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
  """The optax transformation for `config` (with its schedule injected)."""
  schedule = learning_rate_schedule(config, total_steps)
  if config.name == 'sgd':
    tx = optax.chain(optax.add_decayed_weights(config.weight_decay, mask=_decay_mask),
                     optax.sgd(schedule, momentum=config.momentum))
  elif config.name == 'adamw':
    tx = optax.adamw(schedule, weight_decay=config.weight_decay, mask=_decay_mask)
  else:
    raise ValueError(f"unknown optimizer {config.name!r}; expected 'sgd' or 'adamw'")
  if config.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
  return tx
