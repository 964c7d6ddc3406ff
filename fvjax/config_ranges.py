"""Declared ranges of every numeric config field, and the choices of fixed-vocabulary text fields, checked when a
config is loaded, before any work starts.

A field's range is found by its dotted path ('optimizer.learning_rate'), else by its last name ('learning_rate'),
else by its parent's name ('num_pairs.*'), so one declaration covers the field wherever a trainer's config has it.
`check` raises ValueError naming the field, the range and the value: `--set total_steps=-5` stops at load instead of
reporting an untrained model.
"""

import dataclasses
import math
import numbers

import ml_collections

from fvjax.edge import POOLINGS


@dataclasses.dataclass(frozen=True)
class Range:
  """low <= value (or low < value) and value <= high (or value < high); integer: a whole number."""
  low: float = -math.inf
  high: float = math.inf
  low_open: bool = False
  high_open: bool = False
  integer: bool = False

  def contains(self, value) -> bool:
    if self.integer and not isinstance(value, numbers.Integral):
      return False
    if not math.isfinite(value):
      return False
    above = value > self.low if self.low_open else value >= self.low
    below = value < self.high if self.high_open else value <= self.high
    return above and below

  def describe(self) -> str:
    kind = 'an integer' if self.integer else 'a finite number'
    bounds = []
    if self.low > -math.inf:
      bounds.append(f"{'>' if self.low_open else '>='} {self.low:g}")
    if self.high < math.inf:
      bounds.append(f"{'<' if self.high_open else '<='} {self.high:g}")
    return f"{kind} {' and '.join(bounds)}".strip()


COUNT = Range(1, integer=True)  # sizes, step counts, intervals
START = Range(0, integer=True)  # a step at which something starts, a padding, a seed; 0 allowed
FRACTION = Range(0, 1, low_open=True, high_open=True)  # a share of the data or a false-accept rate
PROBABILITY = Range(0, 1)
POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)

RANGES = {
    # counts
    **{name: COUNT for name in (
        'total_steps', 'batch_size', 'embedding_size', 'eval_pairs', 'keep_checkpoints', 'log_every',
        'checkpoint_every', 'eval_every', 'users_per_batch', 'positives_per_user', 'num_clusters',
        'input_size', 'calibration_images', 'decode_threads', 'coreset_size', 'num_heads', 'set_size', 'max_set_size',
        'sets_per_batch', 'per_identity', 'min_size', 'max_size', 'num_pairs.*', 'quality_hidden', 'steps',
        'pose_template_size')},
    # steps at which something starts, paddings, seeds, "0 = all" or "0 = off"
    **{name: START for name in ('warmup_steps', 'kcs_start', 'norm_penalty_start', 'crop_padding',
                                'max_train_identities', 'seed', 'split_seed', 'probe_views',
                                'hidden')},
    # 0: no held-out people (paper-scale runs evaluate on .bin sets), no validation people
    **{name: Range(0, 1, high_open=True) for name in ('test_fraction', 'validation_fraction')},
    **{name: FRACTION for name in ('calibration_fraction', 'calibration_far', 'selection_far')},
    **{name: PROBABILITY for name in ('flip', 'dropout_rate', 'brightness', 'contrast', 't_alpha', 'degraded_share',
                                         'low_resolution', 'probe_mixup')},
    'momentum': Range(0, 1, high_open=True),
    'max_downscale': Range(1),
    'decay_factor': Range(0, 1, low_open=True),
    'distill_centre': Range(-1, 1),
    **{name: POSITIVE for name in ('learning_rate', 's', 'gumbel_tau', 'gumbel_scale', 'distill_scale',
                                   'grad_clip_norm')},
    **{name: NON_NEGATIVE for name in ('weight_decay', 'norm_penalty', 'distill_weight', 'feature_distill_weight',
                                       'margin_weight', 'positive_weight', 'm', 'h', 'gamma_init')},
}


CHOICES = {  # by a field's last name, wherever it is nested
    'evaluate_checkpoint': ('last', 'best'),
    'quality': ('norm', 'learned'),
    'align': ('auto', 'always', 'never'),
    'tar_at_far_method': ('conservative', 'insightface'),
    'pooling': POOLINGS,  # f's (fvjax.edge.VerifierSpec)
}


def range_of(path: str) -> Range | None:
  """The declared range of the field at dotted `path`, or None."""
  parts = path.split('.')
  for key in (path, parts[-1], f'{parts[-2]}.*' if len(parts) > 1 else None):
    if key in RANGES:
      return RANGES[key]
  return None


def numeric_fields(config: ml_collections.ConfigDict, prefix: str = '') -> dict:
  """{dotted path: value} of every number (not bool) in the config, nested ones included."""
  return _fields(config, lambda v: isinstance(v, numbers.Number) and not isinstance(v, bool), prefix)


def _fields(config: ml_collections.ConfigDict, wanted, prefix: str = '') -> dict:
  """{dotted path: value} of every value `wanted` accepts in the config, nested ones included."""
  fields = {}
  for key, value in config.items():
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      fields.update(_fields(ml_collections.ConfigDict(value), wanted, f'{prefix}{key}.'))
    elif wanted(value):
      fields[f'{prefix}{key}'] = value
  return fields


def check(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config itself when every numeric field with a declared range lies in it, every field of `CHOICES` is one
  of its choices (and templates.min_size <= templates.max_size); raises ValueError naming the first field that
  does not."""
  for path, value in numeric_fields(config).items():
    declared = range_of(path)
    if declared is not None and not declared.contains(value):
      raise ValueError(f'config field {path} must be {declared.describe()}, got {value!r}')
  for path, value in _fields(config, lambda v: isinstance(v, str)).items():
    choices = CHOICES.get(path.split('.')[-1])
    if choices is not None and value not in choices:
      raise ValueError(f'config field {path} must be one of {", ".join(map(repr, choices))}, got {value!r}')
  templates = config.get('templates')
  if templates is not None and templates.get('min_size', 0) > templates.get('max_size', math.inf):
    raise ValueError(f'config field templates.min_size ({templates.min_size}) exceeds templates.max_size '
                     f'({templates.max_size})')
  return config
