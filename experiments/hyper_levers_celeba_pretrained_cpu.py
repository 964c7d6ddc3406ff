"""Which lever makes the personalised verifiers work on new people: one table from one command (dlib_resnet h_bb, CPU).

Each row is the settings chosen before the linear generator (experiments/hyper_celeba_pretrained_cpu.py's
`mlp_generator_config`) at 1,000 steps without their last lever (8 fixed augmented copies of each probe as
distillation targets, `probe_views`) and with one lever changed,
plus two reference rows: the paper's configuration (every weight of f generated, weighted BCE, KCS and the norm
penalty from half-way, 16 users a step, no augmentation) and the floor, f's own layout trained as one network
shared by every user (`method='shared_f'`, the same batches and objective, feature distillation included; a user is
enrolled with f's own features).
Same identity split, seed and 3,000 held-out CelebA pairs for every row; the columns are the held-out people (both
enrolment orders), the 18 validation people (where the settings were chosen) and the generator's own training people.
Run:      python experiments/hyper_levers_celeba_pretrained_cpu.py      (finished rows are read back, not rerun)
Runtime:  about 4 hours on 2 CPU cores (the paper row alone about 12 min: f runs once per user and probe there).
Reading:  one seed per row; the held-out 10-fold spread is about +-2 points, the validation one +-3 to 4.
"""

import sys
from pathlib import Path

from fvjax import cli, demo

ABLATION = cli.load_experiment(Path(__file__).with_name('hyper_ablation_celeba_pretrained_cpu.py'))
CHOSEN = cli.load_experiment(Path(__file__).with_name('hyper_celeba_pretrained_cpu.py'))
WORKDIR = Path('runs/hyper_levers_celeba_pretrained_cpu')
STEPS = 1000
NO_AUGMENTATION = {'probe_augment.flip': 0.0, 'probe_augment.crop_padding': 0, 'probe_augment.contrast': 0.0,
                   'probe_augment.brightness': 0.0}
FLIPS_ONLY = {**NO_AUGMENTATION, 'probe_augment.flip': 0.5}
VARIANTS = (
    ('chosen settings before fixed copies', {}),
    ('paper: every weight generated', {'shared_base': False, 'verifier.normalize_features': False,
                                       'verifier.pooling': 'mean', 'distill_weight': 0.0,
                                       'feature_distill_weight': 0.0, 'users_per_batch': 16,
                                       'optimizer.learning_rate': 1e-3, 'kcs_start': STEPS // 2,
                                       'norm_penalty_start': STEPS // 2, **NO_AUGMENTATION}),
    ('floor: one shared f', {'method': 'shared_f'}),
    ('no feature distillation', {'feature_distill_weight': 0.0}),
    ('mean pooling', {'verifier.pooling': 'mean'}),
    ('shared convolutions from distillation alone', {'distill_only_stem': True}),
    ('personal pooling + logit', {'personal_layers': ('pool', 'logit')}),
    ('128 users a step', {'users_per_batch': 128}),
    ('no graded targets', {'distill_weight': 0.0}),
    ('features not normalised', {'verifier.normalize_features': False}),
    ('personal conv3 + logit', {'personal_layers': ('conv3', 'logit')}),
    ('16 users a step', {'users_per_batch': 16}),
    ('no probe augmentation', NO_AUGMENTATION),
    ('targets from 8 fixed augmented copies (chosen)', {'probe_views': 8}),
    ('floor with targets from 8 fixed augmented copies', {'method': 'shared_f', 'probe_views': 8}),
    ('targets from 8 copies, 128 users a step', {'probe_views': 8, 'users_per_batch': 128}),
    ("f's own template in the generated kernel", {'own_template': True}),
    ("own template, targets from 8 copies", {'own_template': True, 'probe_views': 8}),
    ('targets from 16 fixed augmented copies', {'probe_views': 16}),
    ("8 copies, weight decay 0.1 on f's shared weights", {'probe_views': 8,
                                                          'optimizer.weight_decay_rules': (('theta_0', 0.1),)}),
    # f's layout at about the same budget (weights, MAdds), then one far beyond it: is f's size what limits it?
    ('8 copies, f wider at the end: 12, 24, 32, 48 channels',
     {'probe_views': 8, 'verifier.channels': (12, 24, 32, 48)}),
    ('8 copies, f on 96x96 inputs: 8, 16, 32, 48 channels, all strides 2',
     {'probe_views': 8, 'verifier.input_size': 96, 'verifier.channels': (8, 16, 32, 48),
      'verifier.strides': (2, 2, 2, 2)}),
    ('8 copies, f on 80x80 inputs: 8, 16, 32, 48 channels',
     {'probe_views': 8, 'verifier.input_size': 80, 'verifier.channels': (8, 16, 32, 48)}),
    ('8 copies, f four times as wide: 32, 64, 64, 64 channels (beyond the budget)',
     {'probe_views': 8, 'verifier.channels': (32, 64, 64, 64)}),
    # New faces from the same images: function matching's mixup on the fixed copies (`probe_mixup`).
    ('8 copies, each blended with another training image (share up to 0.3)', {'probe_views': 8, 'probe_mixup': 0.3}),
    ('8 copies, each blended with another training image (share up to 0.5)', {'probe_views': 8, 'probe_mixup': 0.5}),
    # The generator a linear map (`hidden=0`), and that map the feature distillation's head: every image teaches it.
    ('linear generator', {'hidden': 0}),
    ('linear generator, the distillation head', {'hidden': 0, 'tied_feature_head': True}),
    ('linear generator, the distillation head, shared convolutions from distillation alone',
     {'hidden': 0, 'tied_feature_head': True, 'distill_only_stem': True}),
    ('linear generator, the distillation head, targets from 8 fixed copies',
     {'hidden': 0, 'tied_feature_head': True, 'probe_views': 8}),
    ('linear generator, the distillation head, no probe augmentation',
     {'hidden': 0, 'tied_feature_head': True, **NO_AUGMENTATION}),
    # The pairs only calibrate: the map's direction (and f's convolutions) from distillation alone (`distill_only_map`).
    ("linear generator, the distillation head, the map's direction from distillation alone",
     {'hidden': 0, 'tied_feature_head': True, 'distill_only_map': True}),
    ('linear generator, the distillation head, map and convolutions from distillation alone (pairs only calibrate)',
     {'hidden': 0, 'tied_feature_head': True, 'distill_only_map': True, 'distill_only_stem': True}),
    ('linear generator, the distillation head, pairs only calibrate, flips only',
     {'hidden': 0, 'tied_feature_head': True, 'distill_only_map': True, 'distill_only_stem': True, **FLIPS_ONLY}),
    ('linear generator, the distillation head, flips only', {'hidden': 0, 'tied_feature_head': True, **FLIPS_ONLY}),
    ('floor with flips only', {'method': 'shared_f', **FLIPS_ONLY}),
    ('linear generator, the distillation head, flips only, distillation weight 3',
     {'hidden': 0, 'tied_feature_head': True, 'feature_distill_weight': 3.0, **FLIPS_ONLY}),
    ("linear generator, the distillation head, flips only, f's own template",
     {'hidden': 0, 'tied_feature_head': True, 'own_template': True, **FLIPS_ONLY}),
    ("linear generator, flips only, the demo's levers (own template, separate head, generated head decayed 30)",
     {'hidden': 0, **demo.FEW_PEOPLE_LEVERS, **FLIPS_ONLY}),
)


def get_config():
  c = CHOSEN.mlp_generator_config()
  c.total_steps = c.checkpoint_every = c.kcs_start = c.norm_penalty_start = STEPS
  c.probe_views = 0  # the rows' base: the MLP generator's settings before fixed augmented copies (a row of their own)
  c.eval_bins = ()
  c.identification = False
  return c


if __name__ == '__main__':
  ABLATION.main(cli.load_config(__file__, sys.argv[1:]), VARIANTS, WORKDIR)
