"""The one exception type the CLI turns into a single stderr line and exit code 2."""


class UserError(Exception):
  """Bad input from the user (file, flag, gin binding): report in one line, exit 2."""
