"""The papers' benchmark table in one call (`fvjax eval`): rows = models, columns = pair sets.

A model is a backbone (`pretrained:NAME` or a `fvjax train` workdir: cosine of its flip-averaged embeddings) or a
`fvjax hyper` run (its verifiers by the pair protocol: enrol one image of each pair, probe the other, both orders,
as two rows). A set is a pair file (LFW's `pairs.txt` folder, CFP's `fold path1 path2 same` file, an insightface
`.bin`) or an identity folder (random pairs of its held-out identities; backbones only). Each row carries its
parameters and MAdds per image, as the papers' tables do. Embeddings of a pair file are cached per (backbone,
file) (`pairs.pair_set_embeddings`).
"""

import csv
import dataclasses
import io
import json
from pathlib import Path

from fvjax import backbones, data, edge
from fvjax.eval import pairs

METRICS = ('accuracy', 'auc', 'tar@1e-3')
FORMATS = ('text', 'markdown', 'csv', 'json')


@dataclasses.dataclass(frozen=True)
class Row:
  """One model's line of the table: its reports by set name (`verification.verification_report`)."""
  name: str
  params: int
  madds: int
  reports: dict[str, dict]


def is_hyper_run(source: str) -> bool:
  """A `fvjax hyper` workdir (its report names a verifier), as opposed to a backbone."""
  report = Path(source) / 'report.json'
  return report.is_file() and 'verifier_params' in json.loads(report.read_text())


def backbone_row(source: str, sets: list[str], geometry: str = 'align', **evaluate_kwargs) -> Row:
  """The cosine row of a backbone on every set (`pairs.evaluate`)."""
  backbone = backbones.load(source, geometry)
  return Row(backbone.source, backbone.params, backbone.madds, pairs.evaluate(backbone, sets, **evaluate_kwargs))


def hyper_rows(workdir: str, sets: list[str]) -> list[Row]:
  """Two rows of a hypernetwork run's verifiers on every pair file: the first image of each pair enrolled and the
  second probed, and the reverse; identity folders are left out (the run's report holds its own held-out pairs)."""
  from fvjax import verifiers
  from fvjax.train import hyper_eval
  run = verifiers.load(workdir)
  report = json.loads((Path(workdir) / 'report.json').read_text())
  backbone = backbones.load(run.config.backbone)
  results = {}
  for path in (s for s in sets if pairs.is_pair_file(s)):
    images, issame = data.read_pair_images(path)
    inputs = edge.verifier_input(images, run.spec)
    embeddings = pairs.pair_set_embeddings(backbone, path, images)
    results[pairs.report_name(path)] = hyper_eval.evaluate_pairs(run.enrol_fn, embeddings, inputs, issame, run.spec)
  return [Row(f'{workdir} ({order})', report['verifier_params'], report['verifier_madds'],
              {name: result[f'verifier_{order.replace(" ", "_")}'] for name, result in results.items()})
          for order in ('enrol first', 'enrol second')]


def evaluate(models: list[str], sets: list[str], geometry: str = 'align', **evaluate_kwargs) -> list[Row]:
  """Rows of every model on every set; evaluate_kwargs go to `pairs.evaluate` (flip, num_pairs, ...)."""
  rows = []
  for model in models:
    rows += hyper_rows(model, sets) if is_hyper_run(model) else [backbone_row(model, sets, geometry,
                                                                             **evaluate_kwargs)]
  return rows


def _value(report: dict, metric: str) -> float:
  if metric == 'accuracy':
    return 100 * report['accuracy']
  if metric == 'auc':
    return report['auc']
  return 100 * report['tar_at_far']['0.001']


def _cell(report: dict | None, metric: str) -> str:
  if report is None:
    return '-'
  if metric == 'accuracy':
    return f"{100 * report['accuracy']:.2f}±{100 * report['accuracy_std']:.2f}"
  return f'{_value(report, metric):.4f}' if metric == 'auc' else f'{_value(report, metric):.1f}'


def format_table(rows: list[Row], metric: str = 'accuracy', fmt: str = 'text') -> str:
  """The table as text (aligned columns), markdown, csv (value and, for accuracy, its fold std per set) or json
  (every report, ROC points left out)."""
  if metric not in METRICS or fmt not in FORMATS:
    raise ValueError(f'metric must be one of {METRICS} and format one of {FORMATS}, got {metric!r}, {fmt!r}')
  sets = list(dict.fromkeys(name for row in rows for name in row.reports))
  if fmt == 'json':
    without_roc = lambda reports: {k: {m: v for m, v in r.items() if m != 'roc'} for k, r in reports.items()}
    return json.dumps({row.name: {'params': row.params, 'madds': row.madds, 'sets': without_roc(row.reports)}
                       for row in rows}, indent=2)
  if fmt == 'csv':
    out = io.StringIO()
    writer = csv.writer(out)
    std = metric == 'accuracy'
    writer.writerow(['model', 'params', 'madds'] + [c for s in sets for c in ([s, f'{s}_std'] if std else [s])])
    for row in rows:
      cells = []
      for s in sets:
        report = row.reports.get(s)
        cells += [f'{_value(report, metric):.4f}' if report else '']
        cells += [f"{100 * report['accuracy_std']:.4f}" if report else ''] if std else []
      writer.writerow([row.name, row.params, row.madds] + cells)
    return out.getvalue()
  header = ['model', 'params', 'MAdds'] + sets
  lines = [[row.name, f'{row.params:,}', f'{row.madds / 1e6:.1f}M'] + [_cell(row.reports.get(s), metric) for s in sets]
           for row in rows]
  unit = {'accuracy': '10-fold accuracy % (± fold std)', 'auc': 'AUC', 'tar@1e-3': 'TAR % at FAR 1e-3'}[metric]
  if fmt == 'markdown':
    return '\n'.join([f'| {" | ".join(header)} |', '|' + '---|' * len(header)] +
                     [f'| {" | ".join(line)} |' for line in lines] + [f'\n{unit}'])
  widths = [max(len(str(x)) for x in column) for column in zip(header, *lines)]
  render = lambda cells: '  '.join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
  return '\n'.join([render(header)] + [render(line) for line in lines] + [f'({unit})'])
