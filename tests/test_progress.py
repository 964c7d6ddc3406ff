"""fvjax.progress: a stage line, repeated with its elapsed time until the next stage or quiet()."""

import time

from fvjax import progress


def test_a_stage_repeats_until_the_next_or_quiet(monkeypatch, capsys):
  monkeypatch.setattr(progress, 'HEARTBEAT_S', 0.05)
  progress.say('hyper eval', 'pairs')
  time.sleep(0.18)
  progress.say('hyper eval', 'identification')  # stops the first line's repeats
  time.sleep(0.08)
  progress.quiet()
  lines = capsys.readouterr().err.splitlines()
  assert lines[0] == 'hyper eval: pairs' and lines[1].startswith('hyper eval: pairs (')
  assert 'hyper eval: identification' in lines
  first_of_second = lines.index('hyper eval: identification')
  assert all(line.startswith('hyper eval: identification') for line in lines[first_of_second:])
  time.sleep(0.12)
  assert capsys.readouterr().err == ''  # quiet() stopped it
  progress.say('coreset', 'sets', enabled=False)
  time.sleep(0.12)
  assert capsys.readouterr().err == ''
