"""Transparent huge pages for host memory, for the command-line entry points.

XLA's CPU backend allocates an executable's temporaries afresh on every run and glibc hands
blocks that large back to the kernel when they are freed, so each train step faults its buffers
in again page by page: about 900k 4 KiB page faults per step for the t model at 256 (3.6 GB).
Where the kernel offers transparent huge pages on request (`madvise` mode, the common default),
glibc's `glibc.malloc.hugetlb=1` tunable asks for them, and the same step takes about 2k faults
and 15-30% less time (the demo: 10%). glibc reads its tunables only at process start, hence the
restart.
"""

import os
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
OPT_OUT = "SAM2_JAX_HUGE_PAGES"  # set to 0 to keep the process as it is
_THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"


def restart_command() -> tuple[list[str], dict[str, str]] | None:
  """The argv and environment to restart this process with huge pages, or None where it is not needed.

  None when the tunable is already set, when the user opted out (SAM2_JAX_HUGE_PAGES=0), or when
  the kernel's THP mode is not `madvise` (`always` needs no request; `never` or no THP cannot help).
  """
  tunables = os.environ.get("GLIBC_TUNABLES", "")
  if TUNABLE in tunables.split(":") or os.environ.get(OPT_OUT) == "0" or not sys.platform.startswith("linux"):
    return None
  try:
    with open(_THP_MODE) as f:
      if "[madvise]" not in f.read():
        return None
  except OSError:
    return None
  env = dict(os.environ, GLIBC_TUNABLES=":".join(filter(None, [tunables, TUNABLE])))
  return [sys.executable, *sys.orig_argv[1:]], env


def restart_with_huge_pages() -> None:
  """Replaces this process by the same command with glibc asking for huge pages (see the module doc).

  Call it first in a command-line program, under `if __name__ == "__main__":` and before the program's
  heavy imports (JAX and what imports it), which a restart would otherwise do twice; it returns only
  where no restart is needed.
  """
  command = restart_command()
  if command is not None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, *command)
