import json

import pytest

from fvjax import cli


def test_load_config_with_overrides(tmp_path):
  cfg = cli.load_config('experiments/seesaw_ms1mv2.py', ['optimizer.learning_rate=0.05', 'backbone=dw_seesaw_v2'])
  assert cfg.optimizer.learning_rate == 0.05 and cfg.backbone == 'dw_seesaw_v2'
  assert cfg.margin.kind == 'arcface' and cfg.margin.s == 64.0 and cfg.margin.m == 0.5
  assert cfg.optimizer.milestones == tuple(e * (5_822_653 // 256) for e in (8, 12, 14))
  with pytest.raises(FileNotFoundError):
    cli.load_config(tmp_path / 'nope.py')


@pytest.mark.slow
def test_train_command_end_to_end_on_shipped_faces(tmp_path, capsys):
  workdir = tmp_path / 'run'
  cli.main(['train', '--config', 'experiments/seesaw_celeba_cpu.py', '--workdir', str(workdir),
            '--set', f'data_dir={cli.DEMO_DATA}', '--set', 'total_steps=2', '--set', 'batch_size=8',
            '--set', 'eval_pairs=200', '--set', 'backbone=mobilefacenet', '--set', 'checkpoint_every=1'])
  report = json.loads((workdir / 'report.json').read_text())
  assert report['params'] == 1_200_512 and report['steps'] == 2 and report['test_identities'] == 10
  held_out = report['verification']['held_out_identities']
  assert held_out['pairs'] == 200 and 0.0 <= held_out['accuracy'] <= 1.0
  out = capsys.readouterr().out
  assert 'held_out_identities' in out and 'Reproduce: fvjax train' in out
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit()) == ['1', '2']
