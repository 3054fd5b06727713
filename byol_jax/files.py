"""Writes that a kill cannot tear: a reader sees the old file or the new one, never part of one."""
import os
import tempfile

from etils import epath


def is_local(path):
  """Whether `path` is on a local (or mounted) file system, not a URL such as gs://..."""
  return "://" not in os.fspath(path)


def write_atomically(path, data):
  """Writes `data` (str or bytes) to a temporary file beside `path`, then renames it onto `path`.

  Locally the temporary file has an unguessable name created exclusively (it never follows a
  symlink planted under a predictable name), is fsynced before the rename, and the directory after
  it, so a power cut leaves the old file or the new one. A failed write removes its temporary file.
  On GCS objects appear whole, so the write is direct.
  """
  if isinstance(data, str):
    data = data.encode("utf-8")
  if not is_local(path):
    epath.Path(path).write_bytes(data)
    return
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  descriptor, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                           dir=directory)
  try:
    # mkstemp makes the file private (0600); give it the mode of the file it replaces.
    os.fchmod(descriptor, os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644)
    with os.fdopen(descriptor, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  except BaseException:
    if os.path.exists(temporary):
      os.remove(temporary)
    raise
  directory_descriptor = os.open(directory, os.O_RDONLY)
  try:
    os.fsync(directory_descriptor)
  finally:
    os.close(directory_descriptor)
