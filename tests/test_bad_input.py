"""Bad input through the command line: one line on stderr naming the problem, and the documented exit status."""

import re

import numpy as np
import pytest
from PIL import Image

from fvjax import cli

RANDOM_BYTES = bytes(range(256)) * 4
PROGRESS_BAR = re.compile(r'^[\w ]+: +\d+%\|')  # tqdm's lines on stderr, before the error


def _unusable_folder(root):
  """An identity folder of one aligned face and two files that are not images."""
  person = root / 'photos' / 'ann'
  person.mkdir(parents=True, exist_ok=True)
  (person / 'a.pgm').write_bytes((cli.DEMO_DATA / 's1' / '1.pgm').read_bytes())
  (person / 'b.jpg').write_bytes(RANDOM_BYTES)
  (person / 'c.png').write_bytes(RANDOM_BYTES[::-1])
  return root / 'photos'


def _noise_image(path):
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(path)
  return path


def _write(path, content: bytes):
  path.write_bytes(content)
  return path


CASES = [
    # (name, argv given tmp_path, exit status, words the line must hold)
    ('missing user file', lambda d: ['verify', str(d / 'nobody.fvjax'), str(d / 'x.jpg')], 2,
     'user file .*nobody.fvjax does not exist'),
    ('a directory as user file', lambda d: ['verify', str(d), str(d / 'x.jpg')], 2, 'is a directory, not a user file'),
    ('random bytes as user file', lambda d: ['verify', str(_write(d / 'noise.fvjax', RANDOM_BYTES)), 'x.jpg'], 2,
     'noise.fvjax is not an fvjax user file'),
    ('a JPEG renamed as user file',
     lambda d: ['verify', str(_write(d / 'photo.fvjax', b'\xff\xd8\xff\xe0' + RANDOM_BYTES)), 'x.jpg'], 2,
     'photo.fvjax is not an fvjax user file'),
    ('a config that is not Python', lambda d: ['hyper', '--config', str(_write(d / 'c.txt', b'x')), '--workdir',
                                               str(d / 'w')], 2, 'c.txt is not a Python file'),
    ('a missing config', lambda d: ['train', '--config', str(d / 'none.py'), '--workdir', str(d / 'w')], 2,
     'config file .*none.py does not exist'),
    ('an unknown config field', lambda d: ['train', '--config', 'experiments/seesaw_celeba_cpu.py', '--workdir',
                                           str(d / 'w'), '--set', 'totl_steps=5'], 2,
     "the config has no field 'totl_steps'"),
    ('a negative step count', lambda d: ['train', '--config', 'experiments/seesaw_celeba_cpu.py', '--workdir',
                                         str(d / 'w'), '--set', 'total_steps=-5'], 2,
     'config field total_steps must be an integer >= 1, got -5'),
    ('a learning rate that is not finite',
     lambda d: ['hyper', '--config', 'experiments/hyper_celeba_pretrained_cpu.py', '--workdir', str(d / 'w'), '--set',
                'optimizer.learning_rate=1e400'],
     2, 'config field optimizer.learning_rate must be a finite number > 0, got inf'),
    ('mixup without fixed probe copies',
     lambda d: ['hyper', '--config', 'experiments/hyper_celeba_pretrained_cpu.py', '--workdir', str(d / 'w'), '--set',
                'probe_views=0', '--set', 'probe_mixup=0.3'],
     2, 'probe_mixup blends the fixed augmented copies: it needs probe_views > 0'),
    ('a test fraction of 1', lambda d: ['coreset', '--config', 'experiments/coreset_celeba_cpu.py', '--workdir',
                                        str(d / 'w'), '--set', 'test_fraction=1.0'], 2,
     'config field test_fraction must be a finite number >= 0 and < 1, got 1.0'),
    ('a missing hypernetwork run', lambda d: ['enroll', '--hyper', str(d / 'no_run'), '--images',
                                              str(cli.DEMO_DATA / 's1' / '1.pgm'), '--out', str(d / 'u.fvjax'),
                                              '--align', 'never'], 2, 'no checkpoints under .*no_run'),
    ('noise enrolled as an aligned crop', lambda d: ['enroll', '--hyper', str(d / 'no_run'), '--images',
                                                     str(_noise_image(d / 'noise.png')), '--out', str(d / 'u.fvjax')],
     2, 'noise.png does not look like an aligned face: no face found; pass --no-face-check'),
    ('pack into a folder that does not exist', lambda d: ['pack', str(cli.DEMO_DATA), str(d / 'nowhere' / 'a.rec')], 2,
     'nowhere does not exist'),
    ('pack with too many unusable images', lambda d: ['pack', str(_unusable_folder(d)), str(d / 'a.rec')], 2,
     r'2 of 3 images were skipped \(listed above\), more than --max-skipped 0.01; .*a.rec holds the rest'),
    ('enrol over an existing file', lambda d: ['enroll', '--hyper', str(d), '--images', 'x.jpg', '--out',
                                               str(_write(d / 'taken.fvjax', b'keep me'))], 2,
     'taken.fvjax exists; give --force to overwrite it'),
]


@pytest.mark.parametrize('name, argv, status, words', CASES, ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_with_its_exit_status(name, argv, status, words, tmp_path, capsys):
  del name
  assert cli.main(argv(tmp_path)) == status
  err = capsys.readouterr().err
  lines = [line for line in err.strip().splitlines() if not PROGRESS_BAR.match(line)]
  assert len(lines) == 1, err
  assert lines[0].startswith(f'fvjax {argv(tmp_path)[0]}: error: ')
  assert re.search(words, lines[0]), lines[0]


def test_debug_shows_the_traceback(tmp_path):
  with pytest.raises(Exception, match='does not exist'):
    cli.main(['--debug', 'verify', str(tmp_path / 'nobody.fvjax'), 'x.jpg'])


@pytest.mark.parametrize('argv, words', [
    (['gallery', 'identify', 'g', 'x.jpg', '--top-k', '0'], '--top-k: must be at least 1, got 0'),
    (['enroll', '--hyper', 'h', '--images', 'x.jpg', '--out', 'u.fvjax', '--far', '5'],
     '--far: must be between 0 and 1, got 5.0'),
    (['demo', '--steps', '-5'], '--steps: must be at least 1, got -5'),
])
def test_bad_arguments_are_usage_errors_before_any_work(argv, words, capsys):
  with pytest.raises(SystemExit) as exit_:
    cli.main(argv)
  assert exit_.value.code == 2 and words in capsys.readouterr().err


def test_enrol_over_an_existing_file_keeps_it(tmp_path):
  taken = _write(tmp_path / 'taken.fvjax', b'keep me')
  assert cli.main(['enroll', '--hyper', str(tmp_path), '--images', 'x.jpg', '--out', str(taken)]) == 2
  assert taken.read_bytes() == b'keep me'


def test_another_commands_run_given_as_the_hypernetwork_is_a_damaged_run_status(tmp_path, capsys):
  """A workdir of another trainer (here a bare training loop's) where `--hyper` wants a `fvjax hyper` run."""
  import optax
  from tiny_task import tiny_task
  from fvjax.train import LoopConfig, train
  train(tiny_task(), optax.sgd(0.1), LoopConfig(total_steps=1), tmp_path / 'other', run_meta={'lr': 0.1},
        progress=False)
  argv = ['enroll', '--hyper', str(tmp_path / 'other'), '--images', str(cli.DEMO_DATA / 's1' / '1.pgm'), '--out',
          str(tmp_path / 'u.fvjax'), '--align', 'never']
  assert cli.main(argv) == cli.EXIT_DAMAGED_RUN
  assert capsys.readouterr().err.strip().endswith('other is not a `fvjax hyper` run: its checkpoints were written '
                                                  'by another command')
