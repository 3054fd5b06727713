"""Owning a workdir: one run at a time, and nothing a user had there deleted.

A run holds `lock.<process index>` for as long as it works in the workdir, so a second run on the
same workdir stops before touching anything, naming the first. On a local or NFS disk the lock is
the kernel's (`flock`), which a killed process releases by dying. On GCS there is no such lock: the
lock is an object that its owner rewrites (`refresh`) as it logs, and one not rewritten for
`STALE_AFTER_S` is taken as left by a dead run.

What a fresh start or a longer run would replace (metrics, TensorBoard events, config.json,
eval.json, the exported encoder) is moved into `previous/<time>/` first, never deleted.
"""
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import time

from absl import logging
from etils import epath

from byol_jax import files

STALE_AFTER_S = 600
PREVIOUS = "previous"
# What a run writes beside its checkpoints, set aside before another run would replace it.
RECORD = ("metrics.jsonl", "tensorboard", "config.json", "eval.json", "encoder")


class WorkdirError(Exception):
  """A workdir that cannot be used: not a writable directory, or another run holds it."""


def check_writable(workdir):
  """Creates `workdir` if needed and proves it writable, before any work is done."""
  path = epath.Path(workdir)
  if path.exists() and not path.is_dir():
    raise WorkdirError(f"--workdir={workdir} is a file, not a directory. Fix: give a directory "
                       "path (it is created if missing).")
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f".write-test-{socket.gethostname()}-{os.getpid()}"
    probe.write_text("")
    probe.unlink()
  except (OSError, PermissionError) as error:
    raise WorkdirError(f"--workdir={workdir} is not writable ({error}). Fix: choose a directory "
                       "this user can write, or fix its permissions.") from error


def _owner():
  return {
      "host": socket.gethostname(), "pid": os.getpid(), "command": " ".join(sys.argv),
      "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "updated": time.time()
  }


def _held_message(path, owner, how):
  return (
      f"Another run holds {path} ({how}): host {owner.get('host')}, pid {owner.get('pid')}, "
      f"since {owner.get('since')}, command {owner.get('command')!r}. Two runs in one workdir "
      "overwrite each other's checkpoints and logs. Fix: wait for it or stop it, or use another "
      "--workdir; if that run is dead, delete the lock file.")


class Lock:
  """This process's claim on a workdir; `release` (or exit) gives it up."""

  def __init__(self, workdir, process_index=0):
    self.path = epath.Path(workdir) / f"lock.{process_index}"
    self._file = None
    if files.is_local(self.path):
      self._take_local()
    else:
      self._take_remote()

  def _take_local(self):
    self._file = open(self.path, "a+", encoding="utf-8")  # pylint: disable=consider-using-with
    try:
      fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
      if error.errno not in (errno.EAGAIN, errno.EACCES):
        raise
      self._file.seek(0)
      owner = _parse(self._file.read())
      self._file.close()
      self._file = None
      raise WorkdirError(_held_message(self.path, owner, "it is running")) from error
    self._file.seek(0)
    self._file.truncate()
    self._file.write(json.dumps(_owner()))
    self._file.flush()

  def _take_remote(self):
    if self.path.exists():
      owner = _parse(self.path.read_text())
      age = time.time() - owner.get("updated", 0)
      if age < STALE_AFTER_S:
        raise WorkdirError(
            _held_message(
                self.path, owner, f"last refreshed {age:.0f} s ago; a lock not "
                f"refreshed for {STALE_AFTER_S} s counts as left by a dead run"))
      logging.warning("Taking over %s, last refreshed %.0f s ago by host %s, pid %s.", self.path,
                      age, owner.get("host"), owner.get("pid"))
    self.refresh()

  def refresh(self):
    """Marks the claim as alive (remote workdirs; a local lock needs nothing)."""
    if self._file is None:
      self.path.write_text(json.dumps(_owner()))

  def release(self):
    if self._file is not None:
      self._file.close()  # Closing releases the flock; the file stays, naming the last owner.
      self._file = None
    elif self.path.exists():
      self.path.unlink()


def _parse(text):
  try:
    return json.loads(text)
  except json.JSONDecodeError:
    return {}


def set_aside(workdir, names, reason, *, copy=False):
  """Moves (or copies) the existing `names` of `workdir` into previous/<time>/; returns that
  folder, or None when none exists."""
  workdir = epath.Path(workdir)
  present = [n for n in names if (workdir / n).exists()]
  if not present:
    return None
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
  target = workdir / PREVIOUS / stamp
  for name in present:
    _transfer(workdir / name, target / name, copy)
  logging.warning("%s %s of this workdir into %s (%s); nothing was deleted.",
                  "Copied" if copy else "Moved", ", ".join(present), target, reason)
  return target


def _files_under(path):
  """Every file under `path` (itself if a file), by iterdir: GCS has no recursive glob."""
  if not path.is_dir():
    return [path]
  return [f for child in path.iterdir() for f in _files_under(child)]


def _transfer(source, destination, copy):
  """Copies or moves `source` (a file or a folder) to `destination`, file by file."""
  for path in _files_under(source):
    target = destination / path.relative_to(source) if source.is_dir() else destination
    target.parent.mkdir(parents=True, exist_ok=True)
    if copy:
      path.copy(target)
    else:
      path.rename(target)
  if source.is_dir() and not copy:
    for child in _folders_under(source)[::-1]:  # Deepest first: each is empty by then.
      child.rmdir()


def _folders_under(path):
  return [path] + [f for child in path.iterdir() if child.is_dir() for f in _folders_under(child)]
