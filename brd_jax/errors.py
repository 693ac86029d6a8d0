"""The exceptions the CLI turns into one stderr line: bad input (exit 2) and a clean stop on
SIGTERM (exit 0)."""


class UserError(Exception):
  """Bad input from the user (file, flag, gin binding): report in one line, exit 2."""


class Preempted(Exception):
  """SIGTERM arrived: the work done so far is committed; rerunning the command continues it."""


def optional_import(module: str, extra: str, what: str):
  """An optional dependency (outside the main job's lean install), or a one-line UserError that
  names the extra bringing it."""
  import importlib
  try:
    return importlib.import_module(module)
  except ImportError:
    raise UserError(f"{what} needs the {module!r} package: pip install 'brd_jax[{extra}]'") \
        from None
