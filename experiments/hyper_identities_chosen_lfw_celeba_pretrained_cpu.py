"""The identity curve with the current defaults' levers (dlib_resnet h_bb, CPU).

experiments/hyper_identities_lfw_celeba_pretrained_cpu.py (the same people, rows, steps and protocols, LFW trained on
and so never reported) with what the defaults of experiments/hyper_celeba_pretrained_cpu.py changed since that curve
was measured (`LINEAR_GENERATOR_LEVERS`: the linear generator as feature distillation's head, flips only).
Run:      python experiments/hyper_identities_chosen_lfw_celeba_pretrained_cpu.py   (finished rows are read back)
Runtime:  about 30 minutes on 2 CPU cores with the curve's features cached (five rows of 1,000 steps).
"""

import sys
from pathlib import Path

from fvjax import cli

CURVE = cli.load_experiment(Path(__file__).with_name('hyper_identities_lfw_celeba_pretrained_cpu.py'))
CHOSEN = cli.load_experiment(Path(__file__).with_name('hyper_celeba_pretrained_cpu.py'))
WORKDIR = Path('runs/hyper_identities_chosen_lfw_celeba_pretrained_cpu')


def get_config():
  return cli.apply_overrides(CURVE.get_config(), CHOSEN.LINEAR_GENERATOR_LEVERS)


if __name__ == '__main__':
  CURVE.main(cli.load_config(__file__, sys.argv[1:]), WORKDIR)
