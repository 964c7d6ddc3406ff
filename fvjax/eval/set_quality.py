"""FaceCoresetNet where its claim can hold: mixed-quality templates, and a learned quality signal.

`run` trains two aggregators on the same frozen backbone, identities and mixed-quality training sets
(`fvjax.train.coreset`: `degraded_share` of the members are seeded strong degradations): one reading quality from
the feature norm (the paper), one from a learned quality head (`aggregator.quality='learned'`). It then scores five
set descriptors on held-out identities, on clean templates and on templates with a stated share of degraded
members, each protocol drawn with several seeds (templates and degraded members both), so every figure has a
spread: mean pooling, norm-weighted pooling, quality-weighted pooling (the learned quality as the norm), the coreset
(norm) and the coreset (learned quality). It also measures how well each quality signal ranks the test faces by
the identity they keep (Spearman against the head's own target, `quality_head.identity_targets`). With `pose_dir`
(CFP: 10 frontal and 4 profile faces per person, evaluation only) the same descriptors meet pose: two templates of
frontal faces per person, and the same templates with half their members swapped for profiles of that person.
"""

import json
from pathlib import Path

import ml_collections
import numpy as np
import scipy.stats

from fvjax import backbones, models
from fvjax.eval import sets
from fvjax.models.quality import QualityHead
from fvjax.train import coreset, quality_head
from fvjax.train.features import backbone_features, degraded_features

DESCRIPTORS = ('mean_pooling', 'norm_weighted_pooling', 'quality_weighted_pooling', 'coreset_norm',
               'coreset_learned')


def run(config: ml_collections.ConfigDict, workdir: str | Path, progress: bool = True) -> dict:
  """Trains (or reuses) `workdir/norm` and `workdir/learned` from `config.coreset`, evaluates every descriptor on
  every share in `config.shares` (0: the clean protocol) and, with `config.pose_dir`, on its frontal and half-profile
  templates, with `config.protocol_seeds`; writes and returns the report
  {'protocols': {name: {descriptor: {'auc': [per seed], 'tar_at_far': {far: [per seed]}}}},
  'quality_rank': {signal: Spearman}, 'params' and 'madds' (of a template of 8) per aggregator, ...}."""
  workdir = Path(workdir)
  runs = {}
  for quality in ('norm', 'learned'):
    run_config = ml_collections.ConfigDict(config.coreset.to_dict())
    run_config.aggregator.quality = quality
    coreset.run(run_config, workdir / quality, progress)
    runs[quality] = coreset.load_aggregator(workdir / quality)
  base = ml_collections.ConfigDict(config.coreset.to_dict())
  backbone = backbones.load(base.backbone)
  split = backbone.data_split(base)
  features, faces = backbone_features(backbone, split, progress)
  degraded, _ = degraded_features(backbone, split, base.seed, progress)
  _, _, test_idx = coreset.identity_split(faces, split, base.validation_fraction, base.seed)
  template_features = np.concatenate([features[:, 0], degraded[:, 0]])
  head_params = runs['learned'][1]['quality_head']
  descriptor_fns = {**sets.pooling_baselines(),
                    'quality_weighted_pooling': sets.quality_weighted_fn(QualityHead(base.aggregator.quality_hidden),
                                                                         head_params),
                    'coreset_norm': sets.coreset_descriptor_fn(runs['norm'][0], runs['norm'][1]),
                    'coreset_learned': sets.coreset_descriptor_fn(runs['learned'][0], runs['learned'][1])}
  protocols = {}
  for share in config.shares:
    protocols[_share_name(share)] = _evaluate(descriptor_fns, template_features, [
        sets.mixed_quality(coreset.protocol_for(faces.labels, test_idx, base, seed), share, len(features), seed)
        for seed in config.protocol_seeds])
  if config.pose_dir:
    pose_features, pose_faces = backbone_features(backbone, backbones.DataSplit(str(config.pose_dir), 0.0, 0, 'auto'),
                                                  progress)
    profile = np.array(['profile' in str(pose_faces.source[i]['path']) for i in range(len(pose_faces))])
    pairs = [sets.frontal_profile_templates(pose_faces.labels, profile, config.pose_template_size, seed)
             for seed in config.protocol_seeds]
    for name, which in (('CFP frontal', 0), ('CFP half profile', 1)):
      protocols[name] = _evaluate(descriptor_fns, pose_features[:, 0], [p[which] for p in pairs])
  inputs, targets = quality_head.identity_targets(features[test_idx, 0], degraded[test_idx, 0],
                                                  faces.labels[test_idx])
  learned = np.asarray(QualityHead(base.aggregator.quality_hidden).apply({'params': head_params}, inputs))
  report = {
      'test_identities': int(len(np.unique(faces.labels[test_idx]))),
      'protocol_seeds': list(config.protocol_seeds),
      'protocols': protocols,
      'quality_rank': {'norm': float(scipy.stats.spearmanr(np.linalg.norm(inputs, axis=1), targets).statistic),
                       'learned': float(scipy.stats.spearmanr(learned, targets).statistic)},
      'params': {'coreset_norm': models.count_params(runs['norm'][1]),
                 'coreset_learned': models.count_params(runs['learned'][1]),
                 'quality_head': models.count_params(head_params)},
      'madds': {f'coreset_{q}': models.count_madds_of(lambda p, x, q=q: runs[q][0].apply({'params': p}, x).aggregate,
                                                      runs[q][1], np.zeros((1, 8, features.shape[-1]), np.float32))
                for q in runs},
      'selected_steps': {q: json.loads((workdir / q / 'report.json').read_text())['steps'] for q in runs},
  }
  (workdir / 'report.json').write_text(json.dumps(report, indent=2))
  return report


def _share_name(share: float) -> str:
  return 'clean' if share == 0 else f'{share:.0%} degraded'


def _evaluate(descriptor_fns: dict, features: np.ndarray, protocols: list[sets.TemplateProtocol]) -> dict:
  """{descriptor: {'auc': [per protocol], 'tar_at_far': {far: [per protocol]}}} over the protocols (seeds)."""
  results = {name: {'auc': [], 'tar_at_far': {}} for name in descriptor_fns}
  for protocol in protocols:
    for name, fn in descriptor_fns.items():
      report = sets.evaluate_templates(fn, features, protocol)
      results[name]['auc'].append(report['auc'])
      for far, tar in report['tar_at_far'].items():
        results[name]['tar_at_far'].setdefault(far, []).append(tar)
  return results


def format_table(report: dict, fars: tuple[str, ...] = ('0.001', '0.01')) -> str:
  """Markdown: rows = descriptors, columns = TAR@FAR (mean ± std over the protocol seeds) per protocol."""
  protocols = list(report['protocols'])
  header = '| set descriptor | ' + ' | '.join(f'{p} TAR@{f}' for p in protocols for f in fars) + ' |'
  lines = [header, '|---|' + '---:|' * (len(protocols) * len(fars))]
  for name in DESCRIPTORS:
    cells = []
    for protocol in protocols:
      tars = report['protocols'][protocol][name]['tar_at_far']
      cells += [f'{100 * np.mean(tars[f]):.1f} ± {100 * np.std(tars[f]):.1f}' for f in fars]
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  rank = report['quality_rank']
  lines.append(f"\nSpearman of the quality signal vs identity kept, test faces clean and degraded: norm "
               f"{rank['norm']:.3f}, learned {rank['learned']:.3f}")
  return '\n'.join(lines)
