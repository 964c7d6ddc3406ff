"""Ablations of the hypernetwork verifiers on the pretrained dlib_resnet backbone: one table from one command.

Each row is experiments/hyper_paper_celeba_pretrained_cpu.py (every weight of f generated) shortened to 300 steps
(objectives switched at step 150), with one knob changed: f's input resolution, f's width (2x and 4x the 23,617-parameter budget), KCS hard negatives,
the norm penalty, the switch point of the objective schedule, augmentation of the probe images (flip and 4-pixel
crops; then with contrast and brightness jitter of +-20% as well). Same identity split, seed and 3,000 held-out
CelebA pairs for every row; the last column is AUC on pairs of the generator's own training people.
Run:      python experiments/hyper_ablation_celeba_pretrained_cpu.py      (finished rows are read back, not rerun)
Runtime:  about an hour on 2 CPU cores (10 rows; the features of dlib_resnet are computed once and cached).
Reading:  one seed per row; differences within the rows' 10-fold spread (about +-2 points) are noise.
"""

import json
import re
import sys
from pathlib import Path

import ml_collections

from fvjax import checkpoint, cli
from fvjax.train import hyper

WORKDIR = Path('runs/hyper_ablation_celeba_pretrained_cpu')
STEPS = 300
VARIANTS = (
    ('baseline', {}),
    ('f input 112x112', {'verifier.input_size': 112}),
    ('f width 2x', {'verifier.channels': (22, 45, 45, 45)}),
    ('f width 4x', {'verifier.channels': (32, 64, 64, 64)}),
    ('KCS off', {'kcs_start': STEPS}),
    ('norm penalty off', {'norm_penalty': 0.0}),
    ('switch at 1/4', {'kcs_start': STEPS // 4, 'norm_penalty_start': STEPS // 4}),
    ('switch at 3/4', {'kcs_start': 3 * STEPS // 4, 'norm_penalty_start': 3 * STEPS // 4}),
    ('probe augmentation', {'probe_augment.flip': 0.5, 'probe_augment.crop_padding': 4}),
    ('probe augmentation + colour', {'probe_augment.flip': 0.5, 'probe_augment.crop_padding': 4,
                                     'probe_augment.contrast': 0.2, 'probe_augment.brightness': 0.2}),
)


def get_config():
  c = cli.load_config(Path(__file__).with_name('hyper_paper_celeba_pretrained_cpu.py'))
  c.total_steps = STEPS
  c.kcs_start = STEPS // 2
  c.norm_penalty_start = STEPS // 2
  c.checkpoint_every = STEPS
  c.eval_bins = ()
  c.identification = False
  return c


def variant_config(base: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
  return cli.apply_overrides(ml_collections.ConfigDict(base.to_dict()), overrides)


def stored_config(workdir: Path) -> dict:
  """A finished run's config, with the fields added to `hyper.default_config` since it ran set to their defaults:
  a new field's default keeps the behaviour the run had."""
  def merged(defaults, stored):
    if not isinstance(defaults, dict) or not isinstance(stored, dict):
      return stored
    return {**defaults, **{k: merged(defaults.get(k), v) for k, v in stored.items()}}
  return merged(json.loads(json.dumps(hyper.default_config().to_dict())), checkpoint.load_run_config(workdir)[0])


def format_row(name: str, report: dict) -> str:
  verification = report['verification']
  held_out = verification['held_out_identities']
  cells = ''.join(f"{100 * held_out[k]['accuracy']:>8.2f} ±{100 * held_out[k]['accuracy_std']:<4.1f}"
                  f"{held_out[k]['auc']:>7.3f}" for k in ('verifier_enrol_first', 'verifier_enrol_second'))
  validation = verification.get('validation_identities')  # absent from reports of older runs
  validation = f"{validation['verifier_enrol_first']['auc']:>11.3f}" if validation else f"{'—':>11}"
  seen = verification['training_identities']['verifier_enrol_first']['auc']
  size = f"{report['verifier_params']:>9,}{report['verifier_madds'] / 1e6:>8.1f}M"
  return f"{name:<30}{size}{cells}{validation}{seen:>12.3f}"


def main(base: ml_collections.ConfigDict, variants=VARIANTS, workdir_root: Path = WORKDIR) -> None:
  """Runs (or reads back) each (name, overrides) variant of `base` in its own workdir; prints one table."""
  rows = []
  for name, overrides in variants:
    workdir = workdir_root / re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')
    config = variant_config(base, overrides)
    report_path = workdir / 'report.json'
    # Read back only a finished run of this very config (the loop stores it JSON-normalised with each checkpoint);
    # any other workdir goes to hyper.run, which resumes it or refuses it naming the keys that differ.
    if report_path.is_file() and stored_config(workdir) == json.loads(json.dumps(config.to_dict())):
      report = json.loads(report_path.read_text())
    else:
      report = hyper.run(config, workdir, progress=False)
    rows.append(format_row(name, report))
    print(rows[-1], flush=True)
  header = (f"{'variant':<30}{'f params':>9}{'MAdds':>9}{'enrol first: acc':>19}{'AUC':>7}{'enrol second: acc':>19}"
            f"{'AUC':>7}{'val: AUC':>11}{'seen: AUC':>12}")
  cosine = report['verification']['held_out_identities']['embedding_cosine']
  print('\n'.join([header, *rows]))
  print(f"embedding cosine of dlib_resnet on the same pairs: {100 * cosine['accuracy']:.2f} "
        f"±{100 * cosine['accuracy_std']:.1f}, AUC {cosine['auc']:.3f}. (val: the validation people, "
        f"seen: the generator's own training people; both enrol first.) Reproduce: python {' '.join(sys.argv)}")


if __name__ == '__main__':
  main(cli.load_config(__file__, sys.argv[1:]))
