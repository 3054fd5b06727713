"""Save, restore and resume the train state with orbax-checkpoint.

Each checkpoint is a step directory holding two orbax items: ``state`` (the
train state pytree, stored as host numpy arrays) and ``metadata`` (a small JSON
dict). With `async_save`, `save` returns once the state is on the host and the
files are written by a background thread, so the devices train on while a
checkpoint is written; the next save, `wait` and `close` wait for it. Without,
the checkpoint is on disk when `save` returns.

Atomicity comes from orbax: a step is written to
``<step>.orbax-checkpoint-tmp-<n>`` and renamed when complete (on GCS, where
renames are not atomic, it is marked complete by a ``commit_success.txt``
file). An interrupted save therefore never shows up as a step.

Restoring never deletes or rewrites anything: a checkpoint that cannot be read,
or that does not fit the train state of the current run, raises
`CheckpointError` and is left as it was, so a user can inspect or move it.
"""
from collections.abc import Mapping
import sys
from typing import Any

from absl import logging
from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp

_STATE = "state"
_METADATA = "metadata"
_MAX_LISTED = 5
_FIX = ("Fix: start this config in a new --workdir, or rerun with the config "
        "that wrote the checkpoint.")


class CheckpointError(Exception):
  """A checkpoint that cannot be restored: corrupt, missing or incompatible."""


def _key_name(key) -> str:
  """One path entry as a plain name, the same for a template and orbax metadata.

  Orbax stores NamedTuples (optax states) as dicts and tuples as lists, so
  attribute, dict and sequence keys all reduce to their name or index.
  """
  if isinstance(key, jax.tree_util.DictKey):
    return str(key.key)
  if isinstance(key, jax.tree_util.GetAttrKey):
    return key.name
  if isinstance(key, jax.tree_util.SequenceKey):
    return str(key.idx)
  if isinstance(key, jax.tree_util.FlattenedIndexKey):
    return str(key.key)
  return str(key)


def _specs(tree) -> dict[tuple[str, ...], tuple[tuple[int, ...], np.dtype]]:
  """Maps each leaf path of `tree` to its (shape, dtype)."""
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  spec = lambda leaf: (tuple(leaf.shape), np.dtype(leaf.dtype))
  return {tuple(map(_key_name, path)): spec(leaf) for path, leaf in leaves}


def _fmt_path(path: tuple[str, ...]) -> str:
  return "[" + "][".join(repr(p) for p in path) + "]"


def _listing(items: list[str]) -> str:
  shown = "; ".join(items[:_MAX_LISTED])
  more = len(items) - _MAX_LISTED
  return shown + (f"; ... and {more} more" if more > 0 else "")


def _differences(saved, wanted) -> list[str]:
  """Human-readable differences between two `_specs` maps (empty if equal)."""
  problems = []
  only_saved = sorted(set(saved) - set(wanted))
  only_wanted = sorted(set(wanted) - set(saved))
  if only_wanted:
    problems.append(f"{len(only_wanted)} array(s) of this run are missing from the "
                    f"checkpoint: {_listing([_fmt_path(p) for p in only_wanted])}")
  if only_saved:
    problems.append(f"{len(only_saved)} array(s) in the checkpoint are not in this run: "
                    f"{_listing([_fmt_path(p) for p in only_saved])}")
  mismatched = [
      f"{_fmt_path(p)} checkpoint {saved[p][0]} {saved[p][1]} vs run "
      f"{wanted[p][0]} {wanted[p][1]}"
      for p in sorted(set(saved) & set(wanted))
      if saved[p] != wanted[p]
  ]
  if mismatched:
    problems.append(f"{len(mismatched)} array(s) differ in shape or dtype: "
                    f"{_listing(mismatched)}")
  return problems


def _to_host(x) -> np.ndarray:
  """One host copy of a leaf; every process then holds the same numpy array."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    if not x.is_fully_replicated:
      raise ValueError("Checkpointer.save takes one unreplicated copy of the state; got an "
                       f"array sharded across processes with sharding {x.sharding}.")
    x = x.addressable_data(0)
  return np.asarray(x)


def _describe(error: Exception) -> str:
  lines = str(error).strip().splitlines()
  return f"{type(error).__name__}: {lines[0][:300] if lines else ''}"


def _ignore_closed_loop_reports():
  """Drops the "Event loop is closed" reports that follow a failed restore.

  Orbax runs a restore's reads on an event loop of its own and closes it at the first failed
  read; each read still in flight then finishes on a tensorstore thread, fails to call back into
  the closed loop and reports that through sys.unraisablehook (dozens of tracebacks after the
  real error). Other unraisable exceptions still reach the previous hook.
  """
  previous = sys.unraisablehook
  if getattr(previous, "_drops_closed_loop_reports", False):
    return

  def hook(unraisable):
    error = unraisable.exc_value
    if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
      previous(unraisable)

  hook._drops_closed_loop_reports = True  # pylint: disable=protected-access
  sys.unraisablehook = hook


def _corrupt(path: epath.Path, step: int, steps: list[int], cause: str) -> CheckpointError:
  older = [s for s in steps if s < step]
  fallback = (f"move {path} aside to resume from step {older[-1]}, or " if older else "")
  return CheckpointError(f"Checkpoint {path} (step {step}) is corrupt or unreadable ({cause}). "
                         f"It was left untouched. Fix: {fallback}start over in a new --workdir.")


class Checkpointer:
  """Keeps the last few train-state checkpoints of a run in one directory.

  Multi-process runs: every process must call `save` and `restore` with the
  same arguments. Orbax synchronises the processes around a save; the state is
  converted to host numpy arrays, which orbax treats as replicated and writes
  from the primary process only. Each process reads the whole checkpoint on
  restore.
  """

  def __init__(self, directory: str | epath.PathLike, *, keep: int = 3, async_save: bool = False):
    self._directory = epath.Path(directory)
    # From the start, not at a failure: reads in flight report on their own threads, some before
    # the failure reaches the restoring thread, some after a later Checkpointer began.
    _ignore_closed_loop_reports()
    self._manager = ocp.CheckpointManager(
        self._directory,
        item_handlers={
            _STATE: ocp.StandardCheckpointHandler(),
            _METADATA: ocp.JsonCheckpointHandler(),
        },
        # cleanup_tmp_directories: the partial step directories of saves a kill interrupted.
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=async_save,
                                             cleanup_tmp_directories=True),
    )

  @property
  def directory(self) -> epath.Path:
    return self._directory

  def latest_step(self) -> int | None:
    """The highest fully written step, or None if there is none."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """The fully written steps kept in the directory, oldest first."""
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, metadata: Mapping[str, Any]) -> bool:
    """Writes `state` and `metadata` as checkpoint `step`; True if written.

    A step at or below the latest saved step is never overwritten: the save is
    skipped with a warning and False is returned. In a resumed run that step
    already holds this very state (e.g. a final save right after a periodic
    one); to branch from an older step, use a new workdir instead.

    Args:
      step: the training step the state belongs to.
      state: one unreplicated copy of the train state: a pytree of numpy or
        jax arrays (optax states included).
      metadata: a small JSON-serialisable dict stored beside the state.
    """
    latest = self.latest_step()
    if latest is not None and step <= latest:
      logging.warning("Not saving step %d in %s: step %d is already saved there.", step,
                      self._directory, latest)
      return False
    host_state = jax.tree.map(_to_host, state)
    try:
      self._manager.save(
          step, args=ocp.args.Composite(**{
              _STATE: ocp.args.StandardSave(host_state),
              _METADATA: ocp.args.JsonSave(dict(metadata)),
          }), force=True)
    except Exception as e:  # pylint: disable=broad-except
      raise self._failed(e) from e
    return True

  def restore(self, template: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Reads checkpoint `step` (default: latest) shaped like `template`.

    Args:
      template: a pytree with the structure, shapes and dtypes of the saved
        state (e.g. a freshly initialised train state).
      step: the step to restore; None for the latest one.

    Returns:
      (state, metadata): state has the structure of `template`, with numpy
      arrays as leaves; metadata is the dict given to `save`.

    Raises:
      CheckpointError: there is no such checkpoint, it cannot be read, or it
        does not match `template`. The checkpoint files are left untouched.
    """
    steps = self.all_steps()
    if step is None:
      if not steps:
        raise CheckpointError(f"No checkpoint to restore in {self._directory}.")
      step = steps[-1]
    elif step not in steps:
      raise CheckpointError(f"No checkpoint for step {step} in {self._directory}; the steps "
                            f"there are {steps}.")
    path = self._directory / str(step)

    try:
      saved = self._manager.item_metadata(step)[_STATE]
    except Exception as e:  # pylint: disable=broad-except
      raise _corrupt(path, step, steps, _describe(e)) from e
    if saved is None:
      raise _corrupt(path, step, steps, f"no readable metadata in {path / _STATE}")
    problems = _differences(_specs(saved.tree), _specs(template))
    if problems:
      raise CheckpointError(f"Checkpoint {path} (step {step}) does not match the train state "
                            "of this run: " + ". ".join(problems) +
                            ". This happens when a run restarts in the same workdir with a "
                            "different config (e.g. another norm or depth). " + _FIX)

    abstract = jax.tree.map(lambda x: np.empty(np.shape(x), np.dtype(x.dtype)), template)
    try:
      restored = self._manager.restore(
          step, args=ocp.args.Composite(**{
              _STATE: ocp.args.StandardRestore(abstract),
              _METADATA: ocp.args.JsonRestore(),
          }))
    except Exception as e:  # pylint: disable=broad-except
      raise _corrupt(path, step, steps, _describe(e)) from e
    return restored[_STATE], dict(restored[_METADATA])

  def _failed(self, error) -> CheckpointError:
    return CheckpointError(
        f"Writing a checkpoint to {self._directory} failed ({_describe(error)}). The last complete "
        f"checkpoint is step {self.latest_step()}. Fix the cause (e.g. free disk space or fix "
        "permissions), then rerun the same command to resume from it.")

  def raise_if_failed(self):
    """Raises CheckpointError if a background save has failed; returns at once otherwise."""
    try:
      self._manager.check_for_errors()
    except Exception as e:  # pylint: disable=broad-except
      raise self._failed(e) from e

  def wait(self):
    """Returns once every save started so far is complete on disk; CheckpointError if one failed."""
    try:
      self._manager.wait_until_finished()
      self._manager.check_for_errors()
    except Exception as e:  # pylint: disable=broad-except
      raise self._failed(e) from e

  def close(self):
    """Waits for a save in flight, then releases orbax's resources."""
    try:
      self.wait()
    finally:
      self._manager.close()
