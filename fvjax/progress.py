"""What a long run says while it works: one line on stderr per stage of work, named like its progress bars.

Training loops and feature extraction show tqdm bars ('backbone features', 'hyper train', 'coreset train'); the work
between them (set-up, compilation, evaluation) announces itself with `say`, and repeats the line with its elapsed
time every `HEARTBEAT_S` seconds until the next `say` or `quiet`, so a run is never silent for longer. Only
process 0 speaks.
"""

import sys
import threading
import time

HEARTBEAT_S = 4.0
_heartbeat: tuple[threading.Event, threading.Thread] | None = None


def say(stage: str, what: str, enabled: bool = True) -> None:
  """Prints '<stage>: <what>' on stderr and keeps repeating it with the elapsed seconds until the next call or
  `quiet()` (when `enabled`, on process 0 only)."""
  global _heartbeat
  import jax  # imported by every caller already; kept out of this module's import
  quiet()
  if not enabled or jax.process_index() != 0:
    return
  print(f'{stage}: {what}', file=sys.stderr, flush=True)
  start, stop = time.monotonic(), threading.Event()

  def beat():
    while not stop.wait(HEARTBEAT_S):
      print(f'{stage}: {what} ({time.monotonic() - start:.0f} s)', file=sys.stderr, flush=True)

  thread = threading.Thread(target=beat, name='fvjax-progress', daemon=True)
  thread.start()
  _heartbeat = stop, thread


def quiet() -> None:
  """Stops the repeating line of the last `say` (a progress bar takes over, or the work is done)."""
  global _heartbeat
  if _heartbeat is not None:
    stop, thread = _heartbeat
    stop.set()
    thread.join()
    _heartbeat = None
