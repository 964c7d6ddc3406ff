"""Multi-host runs: two JAX processes on this machine (one CPU device each, gloo collectives) run the CLI's
`--distributed` path, against one process with two devices (the same 2-device mesh on one host).

Two hosts share the workdirs and the dataset cache, as on a cluster with shared storage: the dataset is
prepared once, metrics are logged once, and what they train loads in a plain one-device process.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fvjax import align, checkpoint, cli, edge, enroll, userfile

pytestmark = pytest.mark.slow

BACKBONE = ['--config', 'experiments/seesaw_celeba_cpu.py', '--set', f'data_dir={cli.DEMO_DATA}', '--set', 'align=never',
            '--set', 'total_steps=2', '--set', 'batch_size=8', '--set', 'eval_pairs=20', '--set', 'log_every=1',
            '--set', 'backbone=mobilefacenet']
HYPER = ['--config', 'experiments/hyper_celeba_cpu.py', '--set', 'total_steps=4', '--set', 'kcs_start=2',
         '--set', 'norm_penalty_start=2', '--set', 'users_per_batch=4', '--set', 'num_clusters=2',
         '--set', 'eval_pairs=20', '--set', 'log_every=1']
CORESET = ['--config', 'experiments/coreset_celeba_cpu.py', '--set', 'total_steps=4', '--set', 'eval_every=2',
           '--set', 'sets_per_batch=4', '--set', 'max_set_size=5', '--set', 'log_every=1']


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def run_fvjax(args: list[str], root: Path, hosts: int = 1, devices_per_host: int = 1, timeout: float = 400) -> None:
  """`fvjax ARGS` as `hosts` processes of one job (`--distributed`), each with `devices_per_host` CPU devices.

  A failed process stops the others at once (they would wait on it until the coordinator's timeout).
  """
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'FVJAX_CACHE': str(root / 'cache'),
         'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices_per_host}'}
  if hosts > 1:
    env.update(JAX_COORDINATOR_ADDRESS=f'localhost:{_free_port()}', JAX_NUM_PROCESSES=str(hosts))
    args = [args[0], '--distributed', *args[1:]]
  logs = [root / f'{args[0]}.{host}.log' for host in range(hosts)]
  procs = [subprocess.Popen([sys.executable, '-m', 'fvjax.cli', *args], env={**env, 'JAX_PROCESS_ID': str(host)},
                            stdout=log.open('w'), stderr=subprocess.STDOUT) for host, log in enumerate(logs)]
  deadline = time.monotonic() + timeout
  while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
    if any(p.poll() not in (None, 0) for p in procs):
      break
    time.sleep(0.5)
  for p in procs:
    if p.poll() is None:
      p.kill()
    p.wait()
  failed = [(log, p.returncode) for log, p in zip(logs, procs) if p.returncode]
  assert not failed, '\n'.join(f'{log} exited {rc}:\n{log.read_text()[-3000:]}' for log, rc in failed)


def logged(workdir: Path) -> list[dict]:
  return [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Backbone, hypernetwork and coreset runs on two hosts, and again on one host with two devices (the
  hypernetwork and coreset on the two hosts' backbone: k-means clusters and sets depend on the features)."""
  root = tmp_path_factory.mktemp('multihost')
  two = root / 'two_hosts'
  for base, hosts, devices in ((two, 2, 1), (root / 'one_host', 1, 2)):
    base.mkdir()
    run_fvjax(['train', *BACKBONE, '--workdir', str(base / 'backbone')], base, hosts, devices)
    run_fvjax(['hyper', *HYPER, '--workdir', str(base / 'hyper'), '--set', f'backbone={two / "backbone"}'],
              base, hosts, devices)
    run_fvjax(['coreset', *CORESET, '--workdir', str(base / 'coreset'), '--set', f'backbone={two / "backbone"}',
               '--set', f'hyper_workdir={two / "hyper"}'], base, hosts, devices)
  return root


@pytest.mark.parametrize('stage', ['backbone', 'hyper', 'coreset'])
def test_two_hosts_train_like_one_host_with_two_devices(runs, stage):
  two, one = logged(runs / 'two_hosts' / stage), logged(runs / 'one_host' / stage)
  assert [m['step'] for m in two] == [m['step'] for m in one] == list(range(1, len(one) + 1))  # logged once
  # The same global batches: the hosts' shares assemble the one-host batch (up to row order, hence rounding).
  np.testing.assert_allclose([m['loss'] for m in two], [m['loss'] for m in one], rtol=1e-5)
  np.testing.assert_allclose([m['grad_norm'] for m in two], [m['grad_norm'] for m in one], rtol=1e-3)


def test_the_dataset_is_prepared_once_for_both_hosts(runs):
  log = (runs / 'two_hosts' / 'train.0.log').read_text() + (runs / 'two_hosts' / 'train.1.log').read_text()
  assert log.count('images, once) under') == 1  # the line fvjax.data.folder prints when it prepares a folder


def test_what_two_hosts_trained_loads_and_enrols_in_one_process(runs, tmp_path):
  two = runs / 'two_hosts'
  state, run = checkpoint.load_run(two / 'backbone')  # saved from a 2-device mesh, restored on 1 device
  assert run['total_steps'] == 2 and isinstance(state['params']['backbone']['stem']['conv']['kernel'], np.ndarray)
  report = json.loads((two / 'coreset' / 'report.json').read_text())
  assert {'single_image', 'set_mean', 'set_coreset'} <= set(report['enrolment'])
  images = sorted((cli.DEMO_DATA / 's1').iterdir())[:3]
  faces = np.stack([align.read_face(p, 'never') for p in images])
  user = enroll.from_images(two / 'hyper', faces, [p.name for p in images], 'someone', 'coreset', two / 'coreset')
  userfile.save(tmp_path / 'someone.fvjax', user)
  theta = userfile.load(tmp_path / 'someone.fvjax').theta
  assert theta.shape == (edge.VerifierSpec.from_dict(user.spec).num_params,) and np.isfinite(theta).all()
