"""What the command-line programs share: bad flags and bad input end in one `error: ...` line on stderr and
exit status 2, never in a traceback; output folders are created (and checked) before any work is done."""

import os
import runpy
import sys
from typing import Callable, NoReturn

from absl import app
from absl import flags
from absl import logging


def fail(message: str) -> NoReturn:
  """Prints `error: <message>` (on one line) to stderr and exits with status 2."""
  print("error: " + " ".join(message.split()), file=sys.stderr)
  sys.exit(2)


def parse_flags(argv: list[str], check: Callable[[], object] | None = None) -> list[str]:
  """absl flag parsing; a malformed, unknown, out-of-bounds or missing required flag, or a stray argument, fails.

  `check` runs after parsing, for flags whose values load lazily (a config file raises when first read).
  """
  try:
    argv = flags.FLAGS(argv)
    if check is not None:
      check()
  except flags.Error as e:
    # A config file that fails to load embeds its traceback in the message: the last line says what went wrong.
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    fail(" ".join(dict.fromkeys(lines[:1] + lines[-1:])))
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
  return argv


def quiet_library_logs() -> None:
  """Shows WARNING and above from the libraries' absl logging (JAX, Orbax), unless -v/--verbosity was given:
  after parsing flags, absl turns INFO on by default. Call it at the start of `main`."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def parse_config_flags(argv: list[str], config: flags.FlagHolder) -> list[str]:
  """`parse_flags` for a program with an ml_collections config flag: a config file that cannot be loaded, or an
  override of a field the config does not have, fails like any other bad argument."""
  try:
    return parse_flags(argv, check=lambda: config.value.get("model_name"))
  except OSError as e:  # ml_collections: a config file that cannot be read
    fail(f"cannot load --{config.name}: {str(e.__cause__ or e).strip().splitlines()[-1].strip()}")
  except AttributeError as e:  # ml_collections: `--config.<field>=...` for a field the config does not have
    field = str(e).strip("\"'")
    named = [a.split("=")[0] for a in argv if a.startswith(f"--{config.name}.") and field in a.split("=")[0].split(".")]
    fail(f"{named[0] if named else field}: the config has no field {field!r}.")


def run(main: Callable[[], None], config: flags.FlagHolder | None = None) -> None:
  """Runs `main` (which reads its absl flags, and the ml_collections `config` flag if given) as a command-line
  program.

  ValueError (bad input: the readers' messages name the file), OSError (a path that cannot be read or
  written) and ImportError (a missing optional dependency, with its install hint) end in `fail`.
  """
  def main_with_errors(argv: list[str]) -> None:
    del argv
    quiet_library_logs()
    try:
      main()
    except (ValueError, OSError, ImportError) as e:
      fail(str(e))

  app.run(main_with_errors, flags_parser=parse_flags if config is None else
          lambda argv: parse_config_flags(argv, config))


def make_output_dir(path: str, flag: str) -> None:
  """Creates the folder given by `--{flag}`; ValueError when it cannot be created or written."""
  if os.path.exists(path) and not os.path.isdir(path):
    raise ValueError(f"--{flag} {path!r} is a file, not a directory.")
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise ValueError(f"cannot create --{flag} {path!r}: {e.strerror or e}.") from e
  if not os.access(path, os.W_OK | os.X_OK):
    raise ValueError(f"--{flag} {path!r} is not writable.")


def segment_command() -> None:
  """The `sam2-jax-segment` console script: runs `python -m sam2_jax.segment`."""
  runpy.run_module("sam2_jax.segment", run_name="__main__", alter_sys=True)


def convert_command() -> None:
  """The `sam2-jax-convert` console script: runs `python -m sam2_jax.convert`."""
  runpy.run_module("sam2_jax.convert", run_name="__main__", alter_sys=True)
