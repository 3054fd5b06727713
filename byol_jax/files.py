"""Writes that a kill cannot tear: a reader sees the old file or the new one, never part of one."""
import os

from etils import epath


def write_atomically(path, data):
  """Writes `data` (str or bytes) to a temporary file beside `path`, then renames it onto `path`.

  The rename is atomic on local and POSIX file systems. On GCS a rename is a copy, but objects
  appear whole, so a reader still never sees part of one. A kill before the rename leaves the old
  file and a `*.tmp-<pid>` file, which the next write does not need.
  """
  path = epath.Path(path)
  temporary = path.with_name(f"{path.name}.tmp-{os.getpid()}")
  if isinstance(data, bytes):
    temporary.write_bytes(data)
  else:
    temporary.write_text(data)
  temporary.replace(path)
