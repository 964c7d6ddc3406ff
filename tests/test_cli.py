import json
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from fvjax import cli


def test_load_config_with_overrides(tmp_path):
  cfg = cli.load_config('experiments/seesaw_ms1mv2.py', ['optimizer.learning_rate=0.05', 'backbone=dw_seesaw_v2'])
  assert cfg.optimizer.learning_rate == 0.05 and cfg.backbone == 'dw_seesaw_v2'
  assert cfg.margin.kind == 'arcface' and cfg.margin.s == 64.0 and cfg.margin.m == 0.5
  assert cfg.optimizer.milestones == tuple(e * (5_822_653 // 256) for e in (8, 12, 14))
  with pytest.raises(FileNotFoundError):
    cli.load_config(tmp_path / 'nope.py')
  for misspelt, named in (('optimizer.learning_rte=0.1', 'learning_rate'), ('total_step=5', 'total_steps'),
                          ('margin.kind.sub=1', 'none')):
    with pytest.raises(KeyError, match=named):
      cli.load_config('experiments/seesaw_ms1mv2.py', [misspelt])


@pytest.mark.parametrize('path, switch', [('experiments/hyper_ablation_celeba_pretrained_cpu.py', 1 / 2),
                                          ('experiments/hyper_identities_celeba_pretrained_cpu.py', 1 / 2),
                                          ('experiments/hyper_levers_celeba_pretrained_cpu.py', 1)])
def test_ablation_variants_change_existing_fields(path, switch):
  base = cli.load_config(path)
  module = cli.load_experiment(path)
  ablation = cli.load_experiment('experiments/hyper_ablation_celeba_pretrained_cpu.py')
  for name, overrides in module.VARIANTS:
    config = ablation.variant_config(base, overrides)  # raises on a field the config lacks
    assert config.to_dict() != base.to_dict() or name in ('baseline', '162 training identities (all)',
                                                          'chosen settings before fixed copies')
  assert base.total_steps == module.STEPS and base.kcs_start == base.norm_penalty_start == module.STEPS * switch


@pytest.mark.slow
def test_train_command_end_to_end_on_shipped_faces(tmp_path, capsys):
  workdir = tmp_path / 'run'
  cli.main(['train', '--config', 'experiments/seesaw_celeba_cpu.py', '--workdir', str(workdir),
            '--set', f'data_dir={cli.DEMO_DATA}', '--set', 'align=never', '--set', 'total_steps=2', '--set', 'batch_size=8',
            '--set', 'eval_pairs=200', '--set', 'backbone=mobilefacenet', '--set', 'checkpoint_every=1',
            '--set', 'validation_fraction=0.2', '--set', 'eval_every=1', '--set', 'evaluate_checkpoint=best'])
  report = json.loads((workdir / 'report.json').read_text())
  assert report['params'] == 1_200_512 and report['test_identities'] == 10 and report['train_identities'] == 22
  from fvjax.train import run_log
  validation = run_log.read_scalars(workdir)['validation/auc']  # 6 of the 28 training people, every step
  best = report['selection']['best_step']
  assert set(validation) == {1, 2} and validation[best] == max(validation.values())
  assert report['steps'] == best and report['selection']['last_step'] == 2
  assert report['selection']['best_validation']['auc'] == pytest.approx(validation[best])
  held_out = report['verification']['held_out_identities']
  # The selected checkpoint, evaluated independently on the run's own split, reproduces the run's report.
  from fvjax import backbones
  from fvjax.eval import pairs
  again = pairs.evaluate(backbones.load(str(workdir)), [str(cli.DEMO_DATA)], num_pairs=200, align='never')
  again = again['att_faces_held_out']
  assert held_out['pairs'] == again['pairs'] == 200
  for metric in ('accuracy', 'accuracy_std', 'auc'):
    assert again[metric] == pytest.approx(held_out[metric], abs=1e-6)
  out = capsys.readouterr().out
  assert 'held_out_identities' in out and 'Reproduce: fvjax train' in out
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit()) == ['1', '2']


def test_demo_runs_on_the_shipped_pretrained_backbone_unless_told_to_train_one(tmp_path):
  from fvjax import demo
  args = cli.build_parser().parse_args(['demo'])
  assert args.backbone == demo.DEFAULT_BACKBONE == 'pretrained:dlib_resnet'
  stages = demo.configs(cli.DEMO_DATA, tmp_path, backbone_steps=85)
  assert list(stages) == ['hyper', 'coreset']  # no backbone training
  for stage in stages.values():  # the frozen backbone reads the demo's folder with the same identity split
    assert (stage.backbone, stage.data_dir, stage.test_fraction, stage.align) == (
        'pretrained:dlib_resnet', str(cli.DEMO_DATA), 0.25, 'never')
  # The demo's verifiers use the settings chosen on CelebA with the few-people levers; only those, sizes and steps
  # differ.
  chosen = cli.apply_overrides(cli.load_config(Path('experiments/hyper_celeba_pretrained_cpu.py')),
                               demo.FEW_PEOPLE_LEVERS).to_dict()
  demo_hyper = stages['hyper'].to_dict()
  for field in ('method', 'hidden', 'shared_base', 'personal_layers', 'own_template', 'tied_feature_head',
                'distill_only_map', 'distill_only_stem', 'verifier', 'distill_weight', 'feature_distill_weight',
                'probe_augment', 'probe_views', 'optimizer'):
    assert demo_hyper[field] == chosen[field], field
  trained = demo.configs(cli.DEMO_DATA, tmp_path, backbone_steps=85, backbone='seesaw_shuffle')
  assert list(trained) == ['backbone', 'hyper', 'coreset'] and trained['backbone'].total_steps == 85
  assert trained['hyper'].backbone == trained['coreset'].backbone == str(tmp_path / 'backbone')


def test_demo_levers_table_varies_the_shipped_demo_and_its_celeba_row_undoes_the_few_people_levers(tmp_path):
  from fvjax import demo
  path = 'experiments/hyper_levers_demo_cpu.py'
  module = cli.load_experiment(path)
  ablation = cli.load_experiment('experiments/hyper_ablation_celeba_pretrained_cpu.py')
  base = cli.load_config(path)
  assert base.to_dict() == demo.configs(cli.DEMO_DATA, tmp_path, backbone_steps=85)['hyper'].to_dict()
  rows = {name: ablation.variant_config(base, overrides).to_dict() for name, overrides in module.VARIANTS}
  assert [name for name, config in rows.items() if config == base.to_dict()] == [module.VARIANTS[0][0]]
  celeba = cli.load_config(Path('experiments/hyper_celeba_pretrained_cpu.py')).to_dict()
  for field in demo.FEW_PEOPLE_LEVERS:
    top = field.split('.')[0]
    assert rows["CelebA's chosen settings"][top] == celeba[top], field


def test_demo_table_and_roc_figure(tmp_path):
  from fvjax import demo
  from fvjax.eval.verification import verification_report
  rng = np.random.default_rng(0)
  issame = np.arange(200) % 2 == 0

  def result(separation):
    return verification_report(rng.normal(size=200) + separation * issame, issame)

  enrol = {k: {'verifier': result(1.0), 'embedding_cosine': result(1.5)} for k in ('single_image', 'set_mean',
                                                                                   'set_coreset')}
  report = {
      'hyper': {'backbone_params': 1_370_176, 'backbone_madds': 145_800_000, 'verifier_params': 23_617,
                'verifier_madds': 2_800_000, 'verification': {'held_out_identities': {
                    'embedding_cosine': result(2.0), 'verifier_enrol_first': result(1.0)}}},
      'coreset': {'aggregator_params': 2_104_321, 'templates': 20, 'template_pairs': {'genuine': 10, 'impostor': 180},
                  'sets': {'coreset': result(3.0), 'mean_pooling': result(2.5), 'norm_weighted_pooling': result(0.5)},
                  'mixed_sets': {'0.5': {'coreset': result(2.0), 'mean_pooling': result(1.0)}},
                  'enrolment': {'users': 10, 'set_size': 3, 'probes': 70, 'genuine_pairs': 70, 'impostor_pairs': 630,
                                **enrol}},
  }
  rows = demo.summary_rows(report)
  assert [r['method'] for r in rows][:2] == ['backbone cosine', 'verifier, enrol 1 image']
  held_out = report['hyper']['verification']['held_out_identities']
  assert rows[0]['auc'] == held_out['embedding_cosine']['auc'] and rows[5]['params'] == 2_104_321
  assert [r['method'] for r in rows[-2:]] == ['coreset, 50% degraded', 'mean pooling, 50% degraded']
  assert rows[-1]['auc'] == report['coreset']['mixed_sets']['0.5']['mean_pooling']['auc']
  table = demo.format_table(rows)
  assert 'coreset set descriptor' in table and '2,104,321' in table and '145.8M' in table
  assert '10 users x 70 probes' in table  # 700 scores: each user's verifier on every probe
  demo.plot_roc(report, tmp_path / 'roc.png')
  assert (tmp_path / 'roc.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


METHOD_CONFIGS = [p for p in sorted(Path('experiments').glob('*.py')) if p.stem.split('_')[0] in ('seesaw', 'hyper', 'coreset')]


@pytest.mark.parametrize('path', METHOD_CONFIGS, ids=lambda p: p.stem)
def test_experiment_configs_set_only_known_fields(path):
  """A misspelt field (`c.num_cluster = ...`) would silently add a key; every training config must match its
  method's defaults."""
  from fvjax.train import coreset, hyper, recognition
  defaults = {'seesaw': recognition, 'hyper': hyper, 'coreset': coreset}[path.stem.split('_')[0]].default_config()
  config = cli.load_config(path)
  assert set(config.to_dict()) == set(defaults.to_dict())
  for key, value in defaults.items():
    if isinstance(value, ml_collections.ConfigDict):
      assert set(config[key].to_dict()) == set(value.to_dict()), key


def test_version_is_the_installed_distributions(capsys):
  import importlib.metadata
  import fvjax
  assert importlib.metadata.version('fvjax') == fvjax.__version__
  with pytest.raises(SystemExit) as exit_:
    cli.main(['--version'])
  assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f'fvjax {fvjax.__version__}'
