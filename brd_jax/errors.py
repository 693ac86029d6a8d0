"""The exceptions the CLI turns into one stderr line: bad input (exit 2) and a clean stop on
SIGTERM (exit 0)."""


class UserError(Exception):
  """Bad input from the user (file, flag, gin binding): report in one line, exit 2."""


class Preempted(Exception):
  """SIGTERM arrived: the work done so far is committed; rerunning the command continues it."""
