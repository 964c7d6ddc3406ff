"""fvjax.runtime: the process restarts itself once with glibc's huge-page tunable, only where it helps."""

import os
import subprocess
import sys

import pytest

from fvjax import runtime

PRINT_TUNABLES = ("from fvjax import runtime; import os, sys; runtime.use_huge_pages(); "
                  "print(os.environ.get('GLIBC_TUNABLES', '') + '|' + ' '.join(sys.argv[1:]))")


def run(env_changes: dict, *args: str) -> str:
  env = {k: v for k, v in os.environ.items() if k not in ('GLIBC_TUNABLES', runtime.OPT_OUT_VARIABLE)}
  env.update(env_changes)
  done = subprocess.run([sys.executable, '-c', PRINT_TUNABLES, *args], env=env, capture_output=True, text=True,
                        check=True)
  return done.stdout.strip()


@pytest.mark.skipif(not runtime.huge_pages_on_request(), reason='needs glibc >= 2.35 and transparent huge pages '
                    "set to 'madvise'")
def test_restarts_once_with_the_tunable_and_the_same_arguments():
  assert run({}, 'a', '--b') == f'{runtime.HUGE_PAGES_TUNABLE}|a --b'
  other = 'glibc.malloc.arena_max=2'
  assert run({'GLIBC_TUNABLES': other}) == f'{other}:{runtime.HUGE_PAGES_TUNABLE}|'  # kept, then ours
  assert run({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'}) == 'glibc.malloc.hugetlb=0|'  # the user's choice stands
  assert run({runtime.OPT_OUT_VARIABLE: '1'}) == '|'


def test_no_restart_where_it_would_not_help(monkeypatch, tmp_path):
  never = tmp_path / 'enabled'
  never.write_text('always madvise [never]\n')
  monkeypatch.setattr(runtime, '_THP_SETTING', never)
  assert not runtime.huge_pages_on_request()
  monkeypatch.setattr(runtime, '_THP_SETTING', tmp_path / 'missing')
  assert not runtime.huge_pages_on_request()
  monkeypatch.delenv('GLIBC_TUNABLES', raising=False)
  monkeypatch.delenv(runtime.OPT_OUT_VARIABLE, raising=False)
  runtime.use_huge_pages()  # returns: restarting here would end the test process
