"""`fvjax` console script: demo; train, hyper, coreset from experiment configs; enroll and verify users.

Exit statuses: 0 success (verify: every image accepted), 1 rejected (verify) or a gallery with unreadable users,
2 bad input or usage (a missing or unreadable file, an image that is not a face, a bad argument or config field),
3 a damaged or incompatible run (its checkpoints). An anticipated failure prints one line,
`fvjax <command>: error: <what>`; --debug (or FVJAX_DEBUG=1) shows the traceback instead.
"""

import argparse
import ast
import importlib.util
import os
import sys
from pathlib import Path

import ml_collections
import numpy as np

from fvjax import align, config_ranges, edge, runtime, userfile

EXIT_REJECTED, EXIT_BAD_INPUT, EXIT_DAMAGED_RUN = 1, 2, 3
ASSETS = Path(__file__).parent / 'assets'
DEMO_DATA = ASSETS / 'att_faces'


def load_experiment(path: str | os.PathLike):
  """The module of an experiment file (its `get_config()`, and whatever else it defines)."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'config file {path} does not exist')
  if path.suffix != '.py':
    raise ValueError(f'config file {path} is not a Python file (an experiments/*.py file with get_config())')
  spec = importlib.util.spec_from_file_location(f'fvjax_config_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(path: str | os.PathLike, overrides: list[str] = ()) -> ml_collections.ConfigDict:
  """Runs `get_config()` of an experiment file, then applies `key.sub=value` overrides (Python literals); every
  numeric field is checked against its declared range (`fvjax.config_ranges`)."""
  module = load_experiment(path)
  parsed = {}
  for item in overrides:
    key, sep, value = item.partition('=')
    if not sep:
      raise ValueError(f'override {item!r} is not of the form key=value')
    try:
      parsed[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      parsed[key] = value  # a bare string
  return config_ranges.check(apply_overrides(module.get_config(), parsed))


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
  """`config` with {'key.sub': value} overrides applied in place; a key the config lacks (a misspelling that would
  otherwise be ignored silently) raises KeyError naming it and the fields that exist there."""
  for key in overrides:
    *parents, leaf = key.split('.')
    node = config
    for part in parents:
      node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
      fields = ', '.join(sorted(node)) if isinstance(node, ml_collections.ConfigDict) else 'none'
      raise KeyError(f'the config has no field {key!r} (fields there: {fields})')
  config.update_from_flattened_dict(overrides)
  return config


def print_report(report: dict, command: str) -> None:
  print(f"\nbackbone {report['backbone']}: {report['params']:,} params, {report['madds'] / 1e6:.1f}M MAdds; "
        f"{report['steps']} steps on {report['train_identities']} identities")
  print(f"{'protocol':<24}{'pairs':>7}{'accuracy':>12}{'AUC':>8}{'TAR@FAR=1e-2':>14}{'TAR@FAR=1e-1':>14}")
  for name, r in report['verification'].items():
    tars = r['tar_at_far']
    print(f"{name:<24}{r['pairs']:>7}{100 * r['accuracy']:>8.2f}±{100 * r['accuracy_std']:<4.1f}{r['auc']:>7.3f}"
          f"{100 * tars['0.01']:>13.1f}%{100 * tars['0.1']:>13.1f}%")
  print(f'(chance accuracy: 50%.) Reproduce: {command}')


def _image_paths(items: list[str]) -> list[Path]:
  """Files as given; a single folder expands to its image files (sorted)."""
  if len(items) == 1 and Path(items[0]).is_dir():
    from fvjax.data.folder import IMAGE_SUFFIXES
    return sorted(p for p in Path(items[0]).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
  return [Path(p) for p in items]


def run_verify(user_path: str, image_paths: list[str], threshold: float | None, align_mode: str = 'auto',
               face_check: bool = True, select: str = 'largest') -> bool:
  """Scores images with a user's verifier in NumPy; prints score, threshold and decision per image.

  Returns whether every image was accepted (`fvjax verify` exits 0 then, else 1).
  """
  user = userfile.load(user_path)
  spec = edge.VerifierSpec.from_dict(user.spec)
  if threshold is None:
    print(f'user {user.name!r}: {user.describe_threshold()}')
    threshold = user.threshold
  else:
    print(f'user {user.name!r}: threshold {threshold:+.3f} (given on the command line)')
  faces = [align.read_face(p, align_mode, face_check=face_check, select=select) for p in image_paths]
  logits = edge.numpy_forward(user.theta, edge.verifier_input(np.stack(faces), spec), spec)
  for path, logit in zip(image_paths, logits):
    decision = 'ACCEPT' if logit >= threshold else 'reject'
    print(f'{decision}  logit {logit:+8.3f}  margin {logit - threshold:+8.3f}  {path}')
  return bool(np.all(logits >= threshold))


def print_hyper_report(report: dict, command: str) -> None:
  print(f"{'pairs':<22}{'method':<24}{'params':>11}{'MAdds':>9}{'accuracy':>12}{'AUC':>8}{'TAR@FAR=1e-2':>14}")
  sizes = {'embedding_cosine': (report['backbone_params'], report['backbone_madds'])}
  for protocol, results in report['verification'].items():
    for name, r in results.items():
      params, madds = sizes.get(name, (report['verifier_params'], report['verifier_madds']))
      print(f"{protocol:<22}{name:<24}{params:>11,}{madds / 1e6:>8.1f}M{100 * r['accuracy']:>8.2f}"
            f"±{100 * r['accuracy_std']:<4.1f}{r['auc']:>7.3f}{100 * r['tar_at_far']['0.01']:>13.1f}%")
  print('(per probe image; the verifier runs alone on the device after enrolment; the embedding baseline runs the '
        f'backbone on every probe.) Reproduce: {command}')
  if 'identification' in report:
    from fvjax.eval import identification
    print('\n' + identification.format_table(report['identification']))


def print_coreset_report(report: dict, command: str) -> None:
  pairs = report['template_pairs']
  print(f"\n{report['templates']} templates of {report['test_identities']} unseen identities: "
        f"{pairs['genuine']:,} genuine / {pairs['impostor']:,} impostor template pairs; FaceCoresetNet K="
        f"{report['coreset_size']}, {report['aggregator_params']:,} params, gamma {report['gamma']:.4f}, "
        f"step {report['steps']} selected by {report['selection']['metric']}")
  fars = ('0.0001', '0.001', '0.01', '0.1')
  print(f"{'set descriptor':<24}{'AUC':>7}" + ''.join(f'{"TAR@FAR=" + f:>16}' for f in fars))
  for name, r in report['sets'].items():
    print(f"{name:<24}{r['auc']:>7.3f}" + ''.join(f"{100 * r['tar_at_far'][f]:>15.1f}%" for f in fars))
  if 'enrolment' in report:
    e = report['enrolment']
    print(f"\npersonalised verifiers: {e['users']} users enrolled from 1 vs {e['set_size']} images, "
          f"{e['genuine_pairs']:,} genuine / {e['impostor_pairs']:,} impostor probes")
    print(f"{'enrolment':<16}{'verifier AUC':>14}{'TAR@FAR=1e-2':>14}{'cosine AUC':>12}{'TAR@FAR=1e-2':>14}")
    for name in ('single_image', 'set_mean', 'set_coreset'):
      v, c = e[name]['verifier'], e[name]['embedding_cosine']
      print(f"{name:<16}{v['auc']:>14.3f}{100 * v['tar_at_far']['0.01']:>13.1f}%{c['auc']:>12.3f}"
            f"{100 * c['tar_at_far']['0.01']:>13.1f}%")
  print(f'(TAR@FAR below 1/#impostor pairs is not resolvable: nan.) Reproduce: {command}')


ALIGN_HELP = ('auto: 112x112 images are aligned crops, other images are raw photos whose face is aligned '
              '(MTCNN, shipped); always; never: take every image as a crop')
FACE_HELP = 'which face of a raw photo with several: the largest (default) or the one nearest the centre'
FACE_CHECK_HELP = ('take images given as crops without checking that they hold a face where an aligned crop has one '
                   '(the check runs MTCNN, which needs JAX)')

# Each command imports what it needs when it runs: `fvjax verify --no-face-check` on crops stays NumPy-only, and --help
# is instant.


def _run_verify(args, command: str) -> int:
  del command
  accepted = run_verify(args.user, args.images, args.threshold, args.align, not args.no_face_check, args.face)
  return 0 if accepted else 1


def _read_faces(args) -> tuple[list[Path], np.ndarray]:
  """(paths, aligned uint8 faces [n, 112, 112, 3]) of the `images` argument, read with `--align`, each image taken
  as a crop checked for a face unless --no-face-check."""
  paths = _image_paths(args.images)
  faces = [align.read_face(p, args.align, face_check=not args.no_face_check, select=args.face) for p in paths]
  faces = np.stack(faces) if faces else np.zeros((0, 112, 112, 3), np.uint8)
  return paths, faces


def _enrol_from_args(args, name: str) -> userfile.User:
  """The user that `fvjax enroll` / `fvjax gallery add` arguments describe (see `_add_enrolment_arguments`)."""
  from fvjax import enroll
  paths, faces = _read_faces(args)
  return enroll.from_images(args.hyper, faces, [p.name for p in paths], name, args.aggregate, args.coreset, args.far)


def _run_enroll(args, command: str) -> None:
  del command
  if Path(args.out).exists() and not args.force:
    raise ValueError(f'{args.out} exists; give --force to overwrite it')
  user = _enrol_from_args(args, args.name or Path(args.out).stem)
  userfile.save(args.out, user)
  print(f'enrolled {user.name!r} from {len(user.sources)} image(s): {args.out} '
        f'({Path(args.out).stat().st_size:,} bytes, {len(user.theta):,} weights); {user.describe_threshold()}')


def _run_gallery(args, command: str) -> int:
  del command
  from fvjax import gallery
  people = gallery.Gallery(args.gallery)
  if args.action == 'add':
    user = _enrol_from_args(args, args.name)
    path = people.add(user, replace=args.replace)
    print(f'added {user.name!r}: {path}; {user.describe_threshold()}')
  elif args.action == 'remove':
    people.remove(args.name)
    print(f'removed {args.name!r} from {args.gallery}')
  elif args.action == 'list':
    users, problems = people.load(skip_bad=True)
    for user in users:
      print(f'{user.name:<24}{len(user.sources):>3} image(s)  {user.describe_threshold()}')
    for problem in problems:
      print(f'UNREADABLE  {problem}')
    print(f'{len(users)} user(s) in {args.gallery}')
    return 1 if problems else 0
  else:
    paths, faces = _read_faces(args)
    matches, problems = people.identify(faces, args.top_k, args.skip_bad)
    for problem in problems:
      print(f'skipped: {problem}')
    for path, candidates in zip(paths, matches):
      best = candidates[0]
      verdict = f'IDENTIFIED {best.name!r}' if best.accepted else 'unknown'
      ranked = ', '.join(f'{m.name} {m.margin:+.2f}' for m in candidates)
      print(f'{verdict:<32} {path}  (margins over each user\'s threshold: {ranked})')
  return 0


def _run_eval(args, command: str) -> None:
  from fvjax.eval import table
  rows = table.evaluate(args.models, args.pairs, args.geometry, flip=args.flip, num_pairs=args.num_pairs,
                        test_fraction=args.test_fraction, split_seed=args.split_seed, align=args.align)
  print(table.format_table(rows, args.metric, args.format))
  if args.format == 'text':
    print(f"(backbones: cosine of {'flip-averaged ' if args.flip else ''}embeddings; verifiers: enrol one image of "
          f'each pair, probe the other; folds as the set gives them.) Reproduce: {command}')


def _run_demo(args, command: str) -> None:
  from fvjax import demo
  align_mode = args.align or ('never' if Path(args.data_dir) == DEMO_DATA else 'auto')
  report = demo.run(args.data_dir, args.workdir, args.steps, backbone=args.backbone, align=align_mode)
  print(f"\nheld-out identities of {args.data_dir}; backbone {report['hyper']['backbone']}:")
  print(demo.format_table(report['table']))
  if 'identification' in report['hyper']:
    from fvjax.eval import identification
    print('\n' + identification.format_table(report['hyper']['identification']))
  print(f"(acc: 10-fold accuracy on balanced pairs, chance 50%. MAdds per probe image.) Reproduce: {command}")
  print(f"report: {Path(args.workdir) / 'report.json'}; ROC curves: {Path(args.workdir) / 'roc.png'}")


def _run_pack(args, command: str) -> int:
  del command
  from fvjax.data import pack
  report = pack.pack(args.folder, args.out, args.align)
  if report.identities:
    print(f'packed {report.images:,} images of {report.identities:,} identities: {args.out} '
          f'(+ {Path(args.out).with_suffix(".idx").name})')
  for line in report.skipped:
    print(f'skipped    {line}')
  for line in report.duplicates:
    print(f'duplicate  {line}')
  files = report.images + len(report.skipped) + len(report.duplicates)
  if files and len(report.skipped) > args.max_skipped * files:
    raise ValueError(f'{len(report.skipped)} of {files} images were skipped (listed above), more than --max-skipped '
                     f'{args.max_skipped:g}; {args.out} holds the rest')
  return 0


def _initialize_distributed(args) -> None:
  from fvjax import parallel
  parallel.initialize_distributed(parallel.DistributedConfig.from_environment(args.distributed))


def _run_train(args, command: str) -> None:
  _initialize_distributed(args)
  from fvjax.train import recognition
  report = recognition.run(load_config(args.config, args.set), args.workdir)
  if report.get('finished', True):
    print_report(report, command)
    print(f'report: {Path(args.workdir) / "report.json"}')


def _run_hyper(args, command: str) -> None:
  _initialize_distributed(args)
  from fvjax.train import hyper
  print_hyper_report(hyper.run(load_config(args.config, args.set), args.workdir), command)


def _run_coreset(args, command: str) -> None:
  _initialize_distributed(args)
  from fvjax.train import coreset
  print_coreset_report(coreset.run(load_config(args.config, args.set), args.workdir), command)


def _add_enrolment_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--hyper', required=True, help='hypernetwork workdir (`fvjax hyper`); names its backbone')
  parser.add_argument('--images', required=True, nargs='+', help='enrolment image files, or one folder of them')
  parser.add_argument('--aggregate', choices=('mean', 'coreset'), default='mean',
                      help='several images -> one enrolment: mean embedding, or FaceCoresetNet descriptor')
  parser.add_argument('--coreset', default=None, help='coreset workdir (`fvjax coreset`), for --aggregate coreset')
  parser.add_argument('--far', type=_fraction, default=1e-3,
                      help="false-accept rate the user's threshold is calibrated for (on the faces the hypernetwork "
                           'run held out)')
  parser.add_argument('--align', choices=align.ALIGN_MODES, default='auto', help=ALIGN_HELP)
  parser.add_argument('--no-face-check', action='store_true', help=FACE_CHECK_HELP)
  parser.add_argument('--face', choices=align.SELECTIONS, default='largest', help=FACE_HELP)


def _at_least_one(text: str) -> int:
  """argparse type: an integer >= 1 (checked before any model loads)."""
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f'must be at least 1, got {value}')
  return value


def _fraction(text: str) -> float:
  """argparse type: a rate strictly between 0 and 1 (checked before any model loads)."""
  value = float(text)
  if not 0 < value < 1:
    raise argparse.ArgumentTypeError(f'must be between 0 and 1, got {value}')
  return value


def _share(text: str) -> float:
  """argparse type: a share from 0 to 1 inclusive."""
  value = float(text)
  if not 0 <= value <= 1:
    raise argparse.ArgumentTypeError(f'must be from 0 to 1, got {value}')
  return value


def build_parser() -> argparse.ArgumentParser:
  """The `fvjax` argument parser; each subcommand's `run(args, command)` is its parsed `run` default."""
  from fvjax import __version__
  parser = argparse.ArgumentParser(prog='fvjax', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--version', action='version', version=f'fvjax {__version__}')
  parser.add_argument('--debug', action='store_true', default=os.environ.get('FVJAX_DEBUG') == '1',
                      help='show the traceback of an error instead of its one line (also FVJAX_DEBUG=1)')
  sub = parser.add_subparsers(dest='command', required=True)

  demo = sub.add_parser('demo', help='backbone, personalised verifiers and coreset sets on shipped real faces')
  demo.set_defaults(run=_run_demo)
  demo.add_argument('--data-dir', default=str(DEMO_DATA), help='identity folder (default: the shipped AT&T faces)')
  demo.add_argument('--workdir', default='runs/demo')
  demo.add_argument('--steps', type=_at_least_one, default=85,
                    help='backbone training steps (with --backbone seesaw_shuffle)')
  demo.add_argument('--align', choices=align.ALIGN_MODES, default=None,
                    help="how the folder's images become crops (default: 'never' for the shipped faces, else 'auto')")
  demo.add_argument('--backbone', default='pretrained:dlib_resnet',
                    help="'pretrained:dlib_resnet' (shipped, no training; the default) or 'seesaw_shuffle' (trained "
                         "from scratch as the first stage)")

  for name, run, help_text in (
      ('train', _run_train, 'train and evaluate an experiment config'),
      ('hyper', _run_hyper, 'train hypernetwork personalised verifiers on a trained backbone'),
      ('coreset', _run_coreset, 'train the FaceCoresetNet set aggregator on a trained backbone')):
    trainer = sub.add_parser(name, help=help_text)
    trainer.set_defaults(run=run)
    trainer.add_argument('--config', required=True, help='experiments/*.py file with get_config()')
    trainer.add_argument('--workdir', required=True)
    trainer.add_argument('--set', action='append', default=[], metavar='KEY=VALUE', help='override a config field')
    trainer.add_argument('--distributed', action='store_true', help='call jax.distributed.initialize() (multi-host)')

  enroll = sub.add_parser('enroll', help="write one user's personalised verifier file from enrolment images")
  enroll.set_defaults(run=_run_enroll)
  enroll.add_argument('--out', required=True, help='user file to write (.fvjax)')
  enroll.add_argument('--name', default=None, help='user name (default: the file stem)')
  enroll.add_argument('--force', action='store_true', help='overwrite an existing --out file')
  _add_enrolment_arguments(enroll)

  packer = sub.add_parser('pack', help='an identity folder -> an insightface .rec/.idx training set (resumable)')
  packer.set_defaults(run=_run_pack)
  packer.add_argument('folder', help='root/<identity>/<image>: aligned 112x112 crops, or raw photos')
  packer.add_argument('out', help='the .rec file to write (its .idx beside it); run again to resume')
  packer.add_argument('--align', choices=align.ALIGN_MODES, default='auto', help=ALIGN_HELP)
  packer.add_argument('--max-skipped', type=_share, default=0.01,
                      help='exit with status 2 when more than this share of the images could not be used '
                           '(unreadable, no face); default 0.01')

  evaluate = sub.add_parser('eval', help='the benchmark table: models x pair sets (LFW, CFP, .bin, held-out '
                                          'identities), params and MAdds per row')
  evaluate.set_defaults(run=_run_eval)
  evaluate.add_argument('--models', '--backbone', dest='models', required=True, nargs='+',
                        help="'pretrained:dlib_resnet', `fvjax train` workdirs (cosine) and `fvjax hyper` workdirs "
                             '(their verifiers, both enrolment orders)')
  evaluate.add_argument('--pairs', required=True, nargs='+',
                        help="LFW-layout folders (pairs.txt), CFP-style pair files ('fold path1 path2 same'), "
                             'insightface .bin files, or identity folders (random pairs of their held-out identities)')
  evaluate.add_argument('--metric', choices=('accuracy', 'auc', 'tar@1e-3'), default='accuracy',
                        help='what each cell shows (json holds them all)')
  evaluate.add_argument('--format', choices=('text', 'markdown', 'csv', 'json'), default='text')
  evaluate.add_argument('--geometry', choices=('align', 'resize'), default='align',
                        help="pretrained backbones: crop -> the network's input by similarity transform or resize")
  evaluate.add_argument('--no-flip', dest='flip', action='store_false', help='no mirrored-image averaging')
  evaluate.add_argument('--num-pairs', type=int, default=3000, help='pairs drawn from an identity folder')
  evaluate.add_argument('--test-fraction', type=float, default=0.25, help="identity folders' held-out fraction")
  evaluate.add_argument('--split-seed', type=int, default=0)
  evaluate.add_argument('--align', choices=align.ALIGN_MODES, default='auto', help='identity folders: ' + ALIGN_HELP)

  gallery = sub.add_parser('gallery', help='a directory of enrolled users: add, remove, list, identify')
  gallery.set_defaults(run=_run_gallery)
  actions = gallery.add_subparsers(dest='action', required=True)
  add = actions.add_parser('add', help='enrol one person into the gallery (no retraining)')
  add.add_argument('gallery', help='gallery directory (created if absent)')
  add.add_argument('--name', required=True, help='user name (unique in the gallery)')
  add.add_argument('--replace', action='store_true', help='overwrite a user of the same name')
  _add_enrolment_arguments(add)
  remove = actions.add_parser('remove', help='delete one user from the gallery')
  remove.add_argument('gallery')
  remove.add_argument('name')
  listing = actions.add_parser('list', help="the gallery's users and their thresholds; unreadable files by name")
  listing.add_argument('gallery')
  identify = actions.add_parser('identify', help='1:N: every probe against every user, top-k with decisions')
  identify.add_argument('gallery')
  identify.add_argument('images', nargs='+', help='probe image files, or one folder of them')
  identify.add_argument('--top-k', type=_at_least_one, default=5)
  identify.add_argument('--skip-bad', action='store_true', help='leave out unreadable user files (named) instead of '
                                                                 'stopping')
  identify.add_argument('--align', choices=align.ALIGN_MODES, default='auto', help=ALIGN_HELP)
  identify.add_argument('--no-face-check', action='store_true', help=FACE_CHECK_HELP)
  identify.add_argument('--face', choices=align.SELECTIONS, default='largest', help=FACE_HELP)

  verify = sub.add_parser('verify', help='accept or reject images against a user file (NumPy only with '
                                         '--no-face-check on aligned crops); exit status 0 when every image is '
                                         'accepted, 1 otherwise')
  verify.set_defaults(run=_run_verify)
  verify.add_argument('user', help='.fvjax user file')
  verify.add_argument('images', nargs='+')
  verify.add_argument('--threshold', type=float, default=None, help="logit threshold (default: the file's)")
  verify.add_argument('--align', choices=align.ALIGN_MODES, default='auto', help=ALIGN_HELP)
  verify.add_argument('--no-face-check', action='store_true', help=FACE_CHECK_HELP)
  verify.add_argument('--face', choices=align.SELECTIONS, default='largest', help=FACE_HELP)
  return parser


def main(argv: list[str] | None = None) -> int:
  """Runs one command; returns its exit status (see the module doc). An anticipated failure is printed as one line
  on stderr and becomes status 2 or 3; anything else (a bug) keeps its traceback."""
  args = build_parser().parse_args(argv)
  try:
    return args.run(args, 'fvjax ' + ' '.join(argv if argv is not None else sys.argv[1:])) or 0
  except Exception as error:  # the one error boundary: what is not anticipated is re-raised
    status = exit_status(error)
    if status is None or args.debug:
      raise
    print(f'fvjax {args.command}: error: {error_message(error)}', file=sys.stderr)
    return status


def exit_status(error: BaseException) -> int | None:
  """EXIT_DAMAGED_RUN for a damaged or incompatible run, EXIT_BAD_INPUT for bad input (fvjax's own errors are
  ValueErrors; files, decoding, config fields, a missing optional dependency), None for anything unanticipated."""
  from fvjax import checkpoint
  if isinstance(error, checkpoint.CheckpointError):
    return EXIT_DAMAGED_RUN
  if isinstance(error, (ValueError, KeyError, OSError, ImportError)):
    return EXIT_BAD_INPUT
  return None


def error_message(error: BaseException) -> str:
  """One line saying what is wrong, in a user's words (and a hint where one exists)."""
  if isinstance(error, IsADirectoryError):
    return f'{error.filename} is a directory, not a file'
  if isinstance(error, FileNotFoundError) and error.filename:
    return f'{error.filename} does not exist'
  if isinstance(error, ImportError) and error.name in ('dlib', 'face_recognition_models'):
    return f"aligning raw photos needs {error.name}: pip install 'fvjax[align]'"
  text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
  return ' '.join(text.split('\n', 1)[0].split()) or type(error).__name__


def console_main() -> None:
  """The `fvjax` console script: `main`'s status becomes the process's exit status. It first restarts itself
  with glibc's huge-page tunable where that speeds up XLA:CPU (`fvjax.runtime`; FVJAX_NO_HUGE_PAGES=1 opts out)."""
  runtime.use_huge_pages()
  sys.exit(main())


if __name__ == '__main__':
  console_main()
