"""Declared config ranges (fvjax.config_ranges): every numeric field of every shipped config has one and lies in it."""

import math
from pathlib import Path

import ml_collections
import pytest

from fvjax import cli, config_ranges

EXPERIMENTS = sorted(p for p in (Path(__file__).parents[1] / 'experiments').glob('*.py')
                     if 'def get_config' in p.read_text())


@pytest.mark.parametrize('path', EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_every_numeric_field_of_a_shipped_config_is_declared_and_valid(path):
  config = cli.load_config(path)  # checks the ranges
  undeclared = [f for f in config_ranges.numeric_fields(config) if config_ranges.range_of(f) is None]
  assert not undeclared, f'{path.name}: numeric fields without a declared range: {undeclared}'


def test_ranges_by_hand():
  assert config_ranges.COUNT.contains(1) and not config_ranges.COUNT.contains(0)
  assert not config_ranges.COUNT.contains(2.0)  # a step count is a whole number
  assert config_ranges.FRACTION.contains(0.25) and not config_ranges.FRACTION.contains(0.0)
  assert not config_ranges.FRACTION.contains(1.0) and not config_ranges.POSITIVE.contains(math.inf)
  assert not config_ranges.POSITIVE.contains(math.nan) and config_ranges.START.contains(0)
  assert config_ranges.range_of('optimizer.learning_rate') is config_ranges.POSITIVE
  assert config_ranges.range_of('num_pairs.celeba_aligned') is config_ranges.COUNT
  assert config_ranges.range_of('no_such_field') is None


def test_check_names_the_field_and_the_value():
  config = ml_collections.ConfigDict({'total_steps': 10, 'optimizer': {'momentum': 1.0}})
  with pytest.raises(ValueError, match=r'field optimizer.momentum must be a finite number >= 0 and < 1, got 1.0'):
    config_ranges.check(config)
  templates = ml_collections.ConfigDict({'templates': {'min_size': 5, 'max_size': 2}})
  with pytest.raises(ValueError, match='templates.min_size .5. exceeds templates.max_size .2.'):
    config_ranges.check(templates)
  choice = ml_collections.ConfigDict({'evaluate_checkpoint': 'bset'})
  with pytest.raises(ValueError, match="field evaluate_checkpoint must be one of 'last', 'best', got 'bset'"):
    config_ranges.check(choice)
