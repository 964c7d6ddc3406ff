"""`fvjax demo`: the three methods end to end on a small identity folder, on a CPU in minutes.

Stages, each a resumable run in its own sub-workdir (re-running the command
after an interruption continues where it stopped; finished stages are reloaded):

1. backbone/  only with `backbone='seesaw_shuffle'`: a SeesawFaceNet (shuffle) trained from scratch with CosFace
              on 75% of the identities; by default the shipped pretrained dlib_resnet is the backbone and this
              stage is skipped;
2. hyper/     hypernetwork personalised verifiers on that frozen backbone (trained on the same 75%);
3. coreset/   FaceCoresetNet set aggregator on the same backbone's features, its templates also tested with half
              of their members degraded (mixed quality), and single-image vs set enrolment of the personalised
              verifiers.

All evaluation is on the 25% held-out identities. Writes `report.json` (every
number) and `roc.png` (ROC of each method) into the workdir.
"""

import json
from pathlib import Path

import ml_collections

from fvjax import cli, pretrained
from fvjax.train import coreset, hyper, recognition

DEFAULT_BACKBONE = 'pretrained:dlib_resnet'
# The levers chosen on the demo's 3 validation people (experiments/hyper_levers_demo_cpu.py) over the settings chosen
# on CelebA's 162: from 25 training people the generator's map from the backbone's embedding to f's logit kernel does
# not carry to new people (AUC 0.72 on the validation people), f's own features of the enrolment face do. Each user's
# kernel is f's own template (`own_template`) plus a generated part held small by weight decay on its head, with
# feature distillation through its own head (a tied one is the generated head, which the decay would hold back too).
FEW_PEOPLE_LEVERS = {'own_template': True, 'tied_feature_head': False,
                     'optimizer.weight_decay_rules': (('head_logit', 30.0),)}


def configs(data_dir: str | Path, workdir: Path, backbone_steps: int, backbone: str = DEFAULT_BACKBONE,
            align: str = 'never') -> dict[str, ml_collections.ConfigDict]:
  """The stage configs, sized for ~40 identities x 10 images on 2 CPU cores.

  backbone: a pretrained model ('pretrained:NAME', the default: the shipped dlib_resnet), which the other stages
  use directly on the same identity split, or 'seesaw_shuffle' (trained from scratch for `backbone_steps` as the
  first stage). align: how the folder's images become crops
  ('never' for the shipped AT&T faces, which are not aligned crops and are kept as they are; 'auto' for raw photos).
  """
  bb = recognition.default_config()
  bb.data_dir = str(data_dir)
  bb.align = align
  bb.test_fraction = 0.25
  bb.batch_size = 32
  bb.total_steps = backbone_steps
  bb.margin.kind = 'cosface'
  bb.margin.s = 32.0
  bb.optimizer.learning_rate = 0.05
  bb.optimizer.schedule = 'cosine'
  bb.optimizer.warmup_steps = 10
  bb.checkpoint_every = 25
  bb.log_every = 10
  bb.eval_pairs = 1000

  frozen = backbone if pretrained.is_pretrained(backbone) else str(workdir / 'backbone')
  # The settings of experiments/hyper_celeba_pretrained_cpu.py at the demo's size, then FEW_PEOPLE_LEVERS.
  hy = hyper.default_config()
  hy.backbone = frozen
  hy.hidden = 0
  hy.tied_feature_head = True
  hy.shared_base = True
  hy.verifier.normalize_features = True
  hy.verifier.pooling = 'depthwise'
  hy.distill_weight = 1.0
  hy.feature_distill_weight = 1.0
  hy.optimizer.learning_rate = 3e-3
  hy.probe_augment.flip = 0.5
  hy.total_steps = 600
  hy.users_per_batch = 24  # of 25 (CelebA's settings, on its 3 validation people: AUC 0.719 vs 0.696 at 16)
  hy.kcs_start = hy.norm_penalty_start = hy.total_steps  # off
  hy.checkpoint_every = 200
  hy.eval_pairs = 1000
  cli.apply_overrides(hy, FEW_PEOPLE_LEVERS)

  cs = coreset.default_config()
  cs.backbone = frozen
  cs.hyper_workdir = str(workdir / 'hyper')
  cs.sets_per_batch = 16
  cs.max_set_size = 8
  cs.optimizer.learning_rate = 1e-3
  cs.optimizer.schedule = 'cosine'
  cs.optimizer.warmup_steps = 20
  cs.total_steps = 200
  cs.eval_every = cs.checkpoint_every = 100
  cs.log_every = 20
  cs.templates.per_identity = 3
  cs.templates.max_size = 3
  cs.enrolment.set_size = 3
  cs.eval_degraded_shares = (0.5,)  # the case FaceCoresetNet is for: half of each template blurred, tiny, occluded
  if pretrained.is_pretrained(backbone):
    for stage in (hy, cs):
      stage.data_dir, stage.test_fraction, stage.split_seed, stage.align = (bb.data_dir, bb.test_fraction,
                                                                            bb.split_seed, bb.align)
    return {'hyper': hy, 'coreset': cs}
  bb.backbone = backbone
  return {'backbone': bb, 'hyper': hy, 'coreset': cs}


def run(data_dir: str | Path, workdir: str | Path, backbone_steps: int = 85, progress: bool = True,
        backbone: str = DEFAULT_BACKBONE, align: str = 'never') -> dict:
  """Runs (or resumes) the stages; returns the combined report (also `workdir/report.json`)."""
  workdir = Path(workdir)
  stages = {'backbone': recognition.run, 'hyper': hyper.run, 'coreset': coreset.run}
  report = {}
  for name, config in configs(data_dir, workdir, backbone_steps, backbone, align).items():
    print(f'\n== {name} ==', flush=True)
    report[name] = stages[name](config, workdir / name, progress=progress)
  report['table'] = summary_rows(report)
  (workdir / 'report.json').write_text(json.dumps(report, indent=2))
  plot_roc(report, workdir / 'roc.png')
  return report


def summary_rows(report: dict) -> list[dict]:
  """One row per method: what it is, its size, its protocol and its numbers."""
  h, c = report['hyper'], report['coreset']
  e, pairs = c['enrolment'], report['hyper']['verification']['held_out_identities']
  image_pairs = f"{pairs['embedding_cosine']['pairs']:,} image pairs"
  probes = f"{e['users']} users x {e['probes']} probes"
  templates = f"{c['templates']} templates, {sum(c['template_pairs'].values()):,} pairs"
  rows = [
      ('backbone cosine', h['backbone_params'], h['backbone_madds'], image_pairs, pairs['embedding_cosine']),
      ('verifier, enrol 1 image', h['verifier_params'], h['verifier_madds'], image_pairs, pairs['verifier_enrol_first']),
      ('verifier, enrol 1 image', h['verifier_params'], h['verifier_madds'], probes, e['single_image']['verifier']),
      (f"verifier, enrol {e['set_size']} (coreset)", h['verifier_params'], h['verifier_madds'], probes,
       e['set_coreset']['verifier']),
      (f"verifier, enrol {e['set_size']} (mean)", h['verifier_params'], h['verifier_madds'], probes,
       e['set_mean']['verifier']),
      ('coreset set descriptor', c['aggregator_params'], None, templates, c['sets']['coreset']),
      ('mean pooling', 0, None, templates, c['sets']['mean_pooling']),
      ('norm-weighted pooling', 0, None, templates, c['sets']['norm_weighted_pooling']),
  ]
  for share, results in c.get('mixed_sets', {}).items():
    rows += [(f'coreset, {float(share):.0%} degraded', c['aggregator_params'], None, templates, results['coreset']),
             (f'mean pooling, {float(share):.0%} degraded', 0, None, templates, results['mean_pooling'])]
  # 10-fold accuracy only where genuine and impostor pairs are balanced; elsewhere AUC and TAR@FAR speak.
  return [{'method': m, 'params': p, 'madds_per_probe': f, 'protocol': proto,
           'accuracy': r['accuracy'] if proto == image_pairs else None,
           'auc': r['auc'], 'tar_at_far_1e-2': r['tar_at_far']['0.01'], 'tar_at_far_1e-1': r['tar_at_far']['0.1']}
          for m, p, f, proto, r in rows]


def format_table(rows: list[dict]) -> str:
  lines = [f"{'method':<30}{'params':>11}{'MAdds':>8}  {'protocol':<34}{'acc %':>7}{'AUC':>7}"
           f"{'TAR@1e-2':>10}{'TAR@1e-1':>10}"]
  for r in rows:
    madds = '' if r['madds_per_probe'] is None else f"{r['madds_per_probe'] / 1e6:.1f}M"
    accuracy = '' if r['accuracy'] is None else f"{100 * r['accuracy']:.1f}"
    lines.append(f"{r['method']:<30}{r['params']:>11,}{madds:>8}  {r['protocol']:<34}{accuracy:>7}"
                 f"{r['auc']:>7.3f}{100 * r['tar_at_far_1e-2']:>9.1f}%{100 * r['tar_at_far_1e-1']:>9.1f}%")
  return '\n'.join(lines)


def plot_roc(report: dict, path: Path) -> None:
  """ROC curves (log FAR) of the pair protocol (cosine vs verifier) and the template protocol (sets)."""
  from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend (e.g. a notebook's) alone
  pairs, c = report['hyper']['verification']['held_out_identities'], report['coreset']
  panels = {
      'image pairs, held-out identities': {'backbone cosine': pairs['embedding_cosine'],
                                           'personalised verifier': pairs['verifier_enrol_first']},
      'templates, held-out identities': {'coreset': c['sets']['coreset'], 'mean pooling': c['sets']['mean_pooling'],
                                         'norm-weighted pooling': c['sets']['norm_weighted_pooling']},
  }
  fig = Figure(figsize=(10, 4))
  axes = fig.subplots(1, 2)
  for ax, (title, curves) in zip(axes, panels.items()):
    for name, r in curves.items():
      ax.plot(r['roc']['far'], r['roc']['tar'], label=f"{name} (AUC {r['auc']:.3f})")
    ax.set_xscale('log')
    ax.set_xlim(1e-3, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel('false accept rate')
    ax.set_ylabel('true accept rate')
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc='lower right', fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
