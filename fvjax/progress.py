"""What a long run says while it works: one line on stderr per stage of work, named like its progress bars.

Training loops and feature extraction show tqdm bars ('backbone features', 'hyper train', 'coreset train'); the work
between them (set-up, evaluation) announces itself here, so a run is never silent for long. Only process 0 speaks.
"""

import sys


def say(stage: str, what: str, enabled: bool = True) -> None:
  """Prints '<stage>: <what>' on stderr (when `enabled`, on process 0 only)."""
  import jax  # imported by every caller already; kept out of this module's import
  if enabled and jax.process_index() == 0:
    print(f'{stage}: {what}', file=sys.stderr, flush=True)
