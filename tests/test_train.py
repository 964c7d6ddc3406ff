import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

from fvjax import checkpoint
from fvjax.train import (LoopConfig, NonFiniteLossError, OptimizerConfig, learning_rate_schedule, make_optimizer,
                         run_log, train)
from fvjax.train.loop import best_checkpoint, evaluated_state

sys.path.insert(0, str(Path(__file__).parent))
from tiny_task import tiny_task  # noqa: E402

TX = optax.sgd(0.1, momentum=0.9)


def leaves_equal(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_killed_run_resumes_to_identical_params(tmp_path):
  config = LoopConfig(total_steps=6, checkpoint_every=2, log_every=1)
  full = train(tiny_task(), TX, config, tmp_path / 'full', progress=False)
  partial = train(tiny_task(), TX, config, tmp_path / 'killed', stop_at=5, progress=False)
  assert int(partial.step) == 5
  assert sorted(int(p.name) for p in (tmp_path / 'killed' / 'checkpoints').iterdir()) == [2, 4, 5]  # slice end saved
  shutil.rmtree(tmp_path / 'killed' / 'checkpoints' / '5')  # as if killed after step 5, before its checkpoint
  resumed = train(tiny_task(), TX, config, tmp_path / 'killed', progress=False)  # restarts from step 4
  assert int(resumed.step) == 6
  assert leaves_equal(full.params, resumed.params)
  assert leaves_equal(full.model_state, resumed.model_state)
  assert leaves_equal(full.opt_state, resumed.opt_state)
  logged = [json.loads(line)['step'] for line in (tmp_path / 'killed' / 'metrics.jsonl').read_text().splitlines()]
  assert logged == [1, 2, 3, 4, 5, 5, 6]  # step 5 redone after the resume from 4


def test_training_lowers_the_loss(tmp_path):
  train(tiny_task(), optax.adam(0.05), LoopConfig(total_steps=30, log_every=1), tmp_path, progress=False)
  losses = [json.loads(line)['loss'] for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_truncated_checkpoints_are_a_clear_error(tmp_path):
  """When no step is intact (here: every data file of every step truncated), resuming stops naming the newest."""
  train(tiny_task(), TX, LoopConfig(total_steps=2, checkpoint_every=2), tmp_path, progress=False)
  for f in (p for p in (tmp_path / 'checkpoints').rglob('*') if p.is_file() and p.stat().st_size > 0):
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
  with pytest.raises(checkpoint.CheckpointError, match=str(tmp_path / 'checkpoints' / '2')):
    train(tiny_task(), TX, LoopConfig(total_steps=4, checkpoint_every=2), tmp_path, progress=False)
  assert not (tmp_path / 'damaged_checkpoints').exists()  # nothing moved when there is nothing to resume from


def test_resuming_a_different_run_is_refused(tmp_path):
  saved = {'lr': 0.1, 'optimizer': {'name': 'sgd', 'momentum': 0.9}, 'seed': 0}
  train(tiny_task(), TX, LoopConfig(total_steps=2, checkpoint_every=2), tmp_path, run_meta=saved, progress=False)
  changed = {'lr': 0.2, 'optimizer': {'name': 'sgd', 'momentum': 0.8}, 'seed': 0, 'new_field': 1}
  message = r'different run \(its config differs in lr, new_field, optimizer\.momentum\)'
  with pytest.raises(checkpoint.CheckpointError, match=message):
    train(tiny_task(), TX, LoopConfig(total_steps=4, checkpoint_every=2), tmp_path, run_meta=changed, progress=False)


def test_nan_loss_stops_with_the_step(tmp_path):
  with pytest.raises(NonFiniteLossError, match='at step 1'):
    train(tiny_task(scale=float('nan')), TX, LoopConfig(total_steps=3), tmp_path, progress=False)


def test_schedules():
  piecewise = learning_rate_schedule(OptimizerConfig(learning_rate=0.1, warmup_steps=10, milestones=(20, 30)), 40)
  np.testing.assert_allclose([piecewise(s) for s in (0, 5, 10, 19, 20, 29, 30)],
                             [0.0, 0.05, 0.1, 0.1, 0.01, 0.01, 0.001], rtol=1e-5)
  cosine = learning_rate_schedule(OptimizerConfig(learning_rate=1.0, schedule='cosine'), 100)
  np.testing.assert_allclose([cosine(0), cosine(50), cosine(100)], [1.0, 0.5, 0.0], atol=1e-6)


def test_weight_decay_skips_vectors():
  tx = make_optimizer(OptimizerConfig(learning_rate=1.0, momentum=0.0, weight_decay=0.5, schedule='constant'), 1)
  params = {'kernel': np.ones((2, 2), np.float32), 'bias': np.ones(2, np.float32)}
  zeros = jax.tree.map(np.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  np.testing.assert_allclose(updates['kernel'], -0.5)
  np.testing.assert_allclose(updates['bias'], 0.0)


def test_weight_decay_rules_follow_the_seesaw_reference_groups():
  # The reference (InsightFace_Pytorch Learner): BatchNorm undecayed; the embedding Linear and the head's kernel
  # at 4e-4; every other parameter (convolutions, SE, PReLU) at 4e-5. SGD's decay is added to the gradient.
  rules = (('/bn/|embedding_bn/', 0.0), ('backbone/embedding/kernel|^head/', 4e-4), ('', 4e-5))
  params = {'backbone': {'stem': {'conv': {'kernel': np.full((3, 3, 3, 4), 2.0, np.float32)},
                                  'bn': {'scale': np.full(4, 2.0, np.float32)}},
                         'se': {'fc1': {'bias': np.full(2, 2.0, np.float32)}, 'prelu': {'alpha': np.full(2, 2.0)}},
                         'embedding': {'kernel': np.full((4, 8), 2.0, np.float32)},
                         'embedding_bn': {'scale': np.full(8, 2.0, np.float32)}},
            'head': {'centres': np.full((8, 10), 2.0, np.float32)}}
  config = OptimizerConfig(learning_rate=1.0, momentum=0.0, weight_decay=5e-4, schedule='constant',
                           weight_decay_rules=rules)
  tx = make_optimizer(config, 1)
  updates, _ = tx.update(jax.tree.map(np.zeros_like, params), tx.init(params), params)
  expected = {'backbone/stem/conv/kernel': 4e-5, 'backbone/stem/bn/scale': 0.0, 'backbone/se/fc1/bias': 4e-5,
              'backbone/se/prelu/alpha': 4e-5, 'backbone/embedding/kernel': 4e-4, 'backbone/embedding_bn/scale': 0.0,
              'head/centres': 4e-4}
  for path, update in jax.tree_util.tree_leaves_with_path(updates):
    name = '/'.join(k.key for k in path)
    np.testing.assert_allclose(update, -2.0 * expected[name], rtol=1e-6, err_msg=name)


def test_adamw_with_rules_equals_optax_adamw():
  rng = np.random.default_rng(0)
  params = {'kernel': rng.normal(size=(3, 4)).astype(np.float32), 'bias': rng.normal(size=4).astype(np.float32)}
  config = OptimizerConfig(name='adamw', learning_rate=0.1, weight_decay=0.3, schedule='constant',
                           weight_decay_rules=(('bias', 0.0), ('kernel', 0.3)))
  ours, theirs = make_optimizer(config, 10), optax.adamw(0.1, weight_decay=0.3, mask=lambda p: jax.tree.map(
      lambda x: x.ndim >= 2, p))
  state_ours, state_theirs = ours.init(params), theirs.init(params)
  for step in range(3):
    grads = jax.tree.map(lambda p: np.asarray(rng.normal(size=p.shape), np.float32), params)
    a, state_ours = ours.update(grads, state_ours, params)
    b, state_theirs = theirs.update(grads, state_theirs, params)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), a, b)
    params = optax.apply_updates(params, a)


SHARDED_SCRIPT = textwrap.dedent('''
    import sys, jax, numpy as np, optax
    sys.path.insert(0, {tests!r})
    from tiny_task import tiny_task
    from fvjax import parallel
    from fvjax.train import LoopConfig, train
    assert jax.device_count() == 8, jax.devices()
    cfg = LoopConfig(total_steps=3, checkpoint_every=100)
    tx = optax.sgd(0.1, momentum=0.9)
    one = train(tiny_task(), tx, cfg, {tmp!r} + '/one', mesh=parallel.data_mesh(jax.devices()[:1]), progress=False)
    eight = train(tiny_task(), tx, cfg, {tmp!r} + '/eight', mesh=parallel.data_mesh(), progress=False)
    assert len(eight.params['Dense_0']['kernel'].sharding.device_set) == 8
    for a, b in zip(jax.tree.leaves((one.params, one.model_state)), jax.tree.leaves((eight.params, eight.model_state))):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    try:  # 16 rows over 3 devices: refused with fvjax's message, before any step runs
      train(tiny_task(), tx, cfg, {tmp!r} + '/three', mesh=parallel.data_mesh(jax.devices()[:3]), progress=False)
      raise AssertionError('an uneven batch was accepted')
    except ValueError as e:
      assert 'global batch of 16 rows does not split evenly over 3 devices' in str(e), e
    print('SHARDED-OK')
''')


def test_eight_devices_match_one_device(tmp_path):
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=8', 'JAX_PLATFORMS': 'cpu'}
  script = SHARDED_SCRIPT.format(tests=str(Path(__file__).parent), tmp=str(tmp_path))
  result = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True, text=True, timeout=600)
  assert 'SHARDED-OK' in result.stdout, result.stderr[-3000:]


def test_load_run_returns_saved_state_and_shares_the_damage_error(tmp_path):
  state = train(tiny_task(), TX, LoopConfig(total_steps=2, checkpoint_every=2), tmp_path, run_meta={'lr': 0.1},
                progress=False)
  saved, run = checkpoint.load_run(tmp_path)
  assert run == {'lr': 0.1}
  assert checkpoint.load_run_config(tmp_path) == ({'lr': 0.1}, 2)  # the config alone, no state restored
  with pytest.raises(FileNotFoundError, match='no checkpoints under'):
    checkpoint.load_run_config(tmp_path / 'elsewhere')
  assert leaves_equal(saved['params'], state.params)
  with pytest.raises(FileNotFoundError, match='no checkpoints under'):
    checkpoint.load_run(tmp_path / 'elsewhere')
  assert not (tmp_path / 'elsewhere').exists()  # looking does not create
  for f in (p for p in (tmp_path / 'checkpoints' / '2').rglob('*') if p.is_file() and p.stat().st_size > 0):
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
  with pytest.raises(checkpoint.CheckpointError, match='damaged'):
    checkpoint.load_run(tmp_path)


def test_two_processes_train_bit_identical_runs(tmp_path):
  # What the README promises for `fvjax demo`: the same command on one machine gives the same numbers.
  script = textwrap.dedent('''
    import sys, optax
    sys.path.insert(0, {tests!r})
    from tiny_task import tiny_task
    from fvjax.train import LoopConfig, train
    train(tiny_task(), optax.adam(0.05), LoopConfig(total_steps=4, checkpoint_every=4), sys.argv[1], progress=False)
  ''').format(tests=str(Path(__file__).parent))
  for name in ('first', 'second'):
    result = subprocess.run([sys.executable, '-c', script, str(tmp_path / name)], capture_output=True, text=True,
                            timeout=300, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
    assert result.returncode == 0, result.stderr[-3000:]
  (first, _), (second, _) = checkpoint.load_run(tmp_path / 'first'), checkpoint.load_run(tmp_path / 'second')
  assert leaves_equal(first, second)
  def logged(name):  # every logged value but the throughput
    lines = (tmp_path / name / 'metrics.jsonl').read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if not k.endswith('_per_s')} for line in lines]
  assert logged('first') == logged('second') and 'loss' in logged('first')[0]


@pytest.mark.parametrize('damage', ['truncate', 'delete'])
def test_a_damaged_newest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, damage, capsys):
  """Truncating the newest step's files, or deleting them, costs the steps since the previous checkpoint: the run
  resumes from it with a one-line warning, the damaged step is kept aside, and the result equals an undamaged run."""
  config = LoopConfig(total_steps=6, checkpoint_every=2, keep_checkpoints=3)
  full = train(tiny_task(), TX, config, tmp_path / 'full', progress=False)
  train(tiny_task(), TX, LoopConfig(total_steps=4, checkpoint_every=2, keep_checkpoints=3), tmp_path / 'run',
        progress=False)
  newest = tmp_path / 'run' / 'checkpoints' / '4'
  files = [p for p in newest.rglob('*') if p.is_file() and p.stat().st_size > 0]
  for f in files:
    if damage == 'truncate':
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
    else:
      f.unlink()
  capsys.readouterr()
  resumed = train(tiny_task(), TX, config, tmp_path / 'run', progress=False)
  warning = capsys.readouterr().err.strip().splitlines()
  assert len(warning) == 1 and 'is damaged; moved to' in warning[0] and 'resuming from step 2' in warning[0]
  assert (tmp_path / 'run' / 'damaged_checkpoints' / '4').is_dir()
  assert int(resumed.step) == 6 and leaves_equal(full.params, resumed.params)


def test_a_finished_run_loads_the_step_its_report_describes(tmp_path):
  train(tiny_task(), TX, LoopConfig(total_steps=4, checkpoint_every=2), tmp_path, run_meta={'lr': 0.1},
        progress=False)
  (tmp_path / 'report.json').write_text(json.dumps({'steps': 2}))
  assert checkpoint.load_run_config(tmp_path) == ({'lr': 0.1}, 2)  # not the newer step 4
  (tmp_path / 'report.json').write_text(json.dumps({'steps': 4}))
  shutil.rmtree(tmp_path / 'checkpoints' / '4')  # as a user deleting a damaged step would
  with pytest.raises(checkpoint.CheckpointError, match=r'report.json describes step 4, but its checkpoint is gone '
                                                       r'\(newest step: 2\)'):
    checkpoint.load_run(tmp_path)


def test_tensorboard_events_hold_what_metrics_jsonl_holds(tmp_path):
  """The events equal the JSON lines, and a resumed run's redone steps replace the first ones (purged)."""
  train(tiny_task(), TX, LoopConfig(total_steps=4, log_every=2), tmp_path, stop_at=3, progress=False)
  shutil.rmtree(tmp_path / 'checkpoints' / '3')  # as if killed before its checkpoint: resumes from step 1
  train(tiny_task(), TX, LoopConfig(total_steps=4, log_every=2), tmp_path, progress=False)
  logged = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  events = run_log.read_scalars(tmp_path / 'tensorboard' / 'train')
  assert [row['step'] for row in logged] == [2, 3, 2, 4]  # the log keeps every line written
  assert set(events['train/loss']) == {2, 4}  # step 3 of the first call was purged: the resumed run never logged it
  for row in logged[2:]:
    for name in ('loss', 'grad_norm', 'images_per_s'):
      np.testing.assert_allclose(events[f'train/{name}'][row['step']], row[name], rtol=1e-6)


def test_validation_is_its_own_stream_and_does_not_purge_training_curves(tmp_path):
  seen = []

  def validate(state):
    seen.append(int(state.step))
    return {'score': float(int(state.step))}

  train(tiny_task(), TX, LoopConfig(total_steps=5, log_every=1), tmp_path, progress=False, validate=validate,
        validate_every=2)
  assert seen == [2, 4, 5]  # every 2 steps and the last
  scalars = run_log.read_scalars(tmp_path)  # both streams, each its own TensorBoard run
  assert scalars['validation/score'] == {2: 2.0, 4: 4.0, 5: 5.0}
  assert set(scalars['train/loss']) == {1, 2, 3, 4, 5}


def test_the_best_validation_step_is_kept_across_a_resume_and_loaded_by_its_report(tmp_path):
  scores = {2: 0.3, 4: 0.7, 6: 0.5, 8: 0.7, 10: 0.1}  # step 8 ties step 4: the earliest is kept
  validate = lambda state: {'score': scores[int(state.step)], 'other': -1.0}
  config = LoopConfig(total_steps=10, checkpoint_every=2, keep_checkpoints=2)
  kwargs = dict(progress=False, validate=validate, validate_every=2, select='score')
  at_4 = train(tiny_task(), TX, config, tmp_path / 'short', stop_at=4, progress=False)
  train(tiny_task(), TX, config, tmp_path / 'run', stop_at=6, **kwargs)  # killed after step 6
  last = train(tiny_task(), TX, config, tmp_path / 'run', **kwargs)  # resumes; the kept best of the first call holds
  assert sorted(int(p.name) for p in (tmp_path / 'run' / 'checkpoints').iterdir()) == [8, 10]
  state, step, scalars = best_checkpoint(tmp_path / 'run', last)
  assert step == int(state.step) == 4 and scalars == {'score': 0.7, 'other': -1.0}
  assert leaves_equal(state.params, at_4.params) and leaves_equal(state.opt_state, at_4.opt_state)

  used, selection = evaluated_state(tmp_path / 'run', last, 'last')
  assert used is last and selection == {'used': 'last', 'last_step': 10, 'best_step': 4, 'best_validation': scalars}
  used, selection = evaluated_state(tmp_path / 'run', last, 'best')
  assert int(used.step) == 4 and selection['used'] == 'best'
  assert evaluated_state(tmp_path / 'short', at_4, 'best')[1] == {'used': 'last', 'last_step': 4}  # none kept

  (tmp_path / 'run' / 'report.json').write_text(json.dumps({'steps': 4}))  # a report of the best step
  saved, _ = checkpoint.load_run(tmp_path / 'run')
  assert leaves_equal(saved['params'], at_4.params)
  assert checkpoint.load_run_config(tmp_path / 'run')[1] == 4
  with pytest.raises(KeyError, match="select='missing' is not one of the validation scalars"):
    train(tiny_task(), TX, config, tmp_path / 'typo', progress=False, validate=validate, validate_every=2,
          select='missing')


def test_frozen_parameters_never_move_and_leave_the_others_alone():
  params = {'aggregator': {'gamma': np.float32(0.5), 'quality_head': {'kernel': np.ones((3, 2), np.float32)}},
            'head': {'centres': np.ones((2, 4), np.float32)}}
  grads = jax.tree.map(lambda p: np.full_like(p, 3.0), params)
  config = OptimizerConfig(name='adamw', learning_rate=0.1, weight_decay=0.5, schedule='constant', grad_clip_norm=1.0)
  frozen = make_optimizer(dataclasses.replace(config, frozen='quality_head/'), 1)
  updates, _ = frozen.update(grads, frozen.init(params), params)
  np.testing.assert_array_equal(updates['aggregator']['quality_head']['kernel'], 0.0)  # no step, no decay
  trained = {'aggregator': {'gamma': params['aggregator']['gamma']}, 'head': params['head']}
  plain = make_optimizer(config, 1)  # the same optimizer on the trained parameters alone: clipping ignores the rest
  expected, _ = plain.update(jax.tree.map(lambda p: np.full_like(p, 3.0), trained), plain.init(trained), trained)
  np.testing.assert_allclose(updates['head']['centres'], expected['head']['centres'], rtol=1e-6)
  np.testing.assert_allclose(updates['aggregator']['gamma'], expected['aggregator']['gamma'], rtol=1e-6)
