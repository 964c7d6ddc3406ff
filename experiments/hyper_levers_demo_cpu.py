"""The demo's personalised verifiers: which settings carry from 25 training people to new ones (AT&T faces, CPU).

Each row is the hyper stage of `fvjax demo` (fvjax.demo.configs: dlib_resnet h_bb, the shipped AT&T faces, 25
training / 3 validation / 10 held-out people, 600 steps) with some settings changed. The settings chosen on CelebA's
162 people (experiments/hyper_celeba_pretrained_cpu.py) are a row; the demo's own levers (`FEW_PEOPLE_LEVERS`) were
chosen on its 3 validation people, never on the 10 held-out ones. The floor is f's own layout shared by every user
(`method='shared_f'`: a user is enrolled with f's own features).
Run:      python experiments/hyper_levers_demo_cpu.py      (finished rows are read back, not rerun)
Runtime:  about 25 minutes on 2 CPU cores (12 rows).
Reading:  one seed per row; 1,000 pairs of 10 held-out people, 3 validation people: differences under about 0.05 in
          either AUC column are not a ranking.
"""

import sys
from pathlib import Path

from fvjax import cli, demo

ABLATION = cli.load_experiment(Path(__file__).with_name('hyper_ablation_celeba_pretrained_cpu.py'))
WORKDIR = Path('runs/hyper_levers_demo_cpu')
CELEBA_SETTINGS = {'own_template': False, 'tied_feature_head': True, 'optimizer.weight_decay_rules': ()}
OWN_TEMPLATE = {'own_template': True, 'tied_feature_head': False}


def steps(n: int) -> dict:
  return {'total_steps': n, 'kcs_start': n, 'norm_penalty_start': n, 'checkpoint_every': n}


def decayed_head(rate: float) -> dict:
  """Weight decay `rate` on the generator's logit-layer head: the generated part of each user's kernel held small."""
  return {'optimizer.weight_decay_rules': (('head_logit', rate),)}


VARIANTS = (
    ("chosen: f's own template, separate distillation head, generated head decayed 30", {}),
    ("CelebA's chosen settings", CELEBA_SETTINGS),
    ("CelebA's settings, 150 steps", {**CELEBA_SETTINGS, **steps(150)}),
    ("CelebA's settings, 1,200 steps", {**CELEBA_SETTINGS, **steps(1200)}),
    ("CelebA's settings, learning rate 1e-3", {**CELEBA_SETTINGS, 'optimizer.learning_rate': 1e-3}),
    ("CelebA's settings, distillation weight 3", {**CELEBA_SETTINGS, 'feature_distill_weight': 3.0}),
    ('floor: one shared f', {**CELEBA_SETTINGS, 'method': 'shared_f'}),
    ("f's own template, tied distillation head", {**CELEBA_SETTINGS, 'own_template': True}),
    ("f's own template, tied head, generated head decayed 3", {**CELEBA_SETTINGS, 'own_template': True,
                                                               **decayed_head(3.0)}),
    ("f's own template, separate distillation head", {**OWN_TEMPLATE, 'optimizer.weight_decay_rules': ()}),
    ("f's own template, separate head, generated head decayed 10", {**OWN_TEMPLATE, **decayed_head(10.0)}),
    ("f's own template, separate head, generated head decayed 100", {**OWN_TEMPLATE, **decayed_head(100.0)}),
)


def get_config():
  return demo.configs(cli.DEMO_DATA, WORKDIR, backbone_steps=0)['hyper']


if __name__ == '__main__':
  ABLATION.main(cli.load_config(__file__, sys.argv[1:]), VARIANTS, WORKDIR)
