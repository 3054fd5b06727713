"""Signs of life, and of progress, between the processes of a multi-process run.

A process killed while its peers wait for it does not always fail their collective (gloo may just
wait), and JAX's distributed runtime then aborts them on a missed heartbeat with no word about the
run; a process whose main thread hangs (say, on its input) leaves the others waiting for ever. So
every process publishes, each second, a tick and the training step its loop last reached, in the
distributed key-value store, and reads the others'. A peer is lost when its ticks stop for
`timeout_s` (its process is gone), or when, while both train, its step stays the same for
`timeout_s` (its loop is stuck); `on_lost` then ends this process with that news. Phases that take
no steps (compiling, saving, evaluating) are marked `busy` and only need ticks. A store that fails
to answer is retried until it has failed for `timeout_s`. A process ends its ticks as it exits,
whatever the cause, so its peers also learn of a crash; it says "finished" only when it ends on
purpose (done, or stopped to resume).
"""
import atexit
import threading
import time

from jax._src import distributed  # The client jax.distributed.initialize connected.

_PREFIX = "byol_jax/peers/"
_FINISHED = "finished"
_BUSY = "-"


def first_line(error):
  """An error's first line, at most 300 characters: what a lost-peer report quotes."""
  return str(error).strip().splitlines()[0][:300]


def _key(process_id):
  return f"{_PREFIX}{process_id}"


class Watch:
  """Ticks for this process and watches the others' ticks and steps on a daemon thread."""

  def __init__(self, process_id, num_processes, timeout_s, on_lost, interval_s=1.0, client=None):
    """`client`: the key-value store; by default the one jax.distributed.initialize connected."""
    self._client = client or distributed.global_state.client
    self._process_id = process_id
    self._others = [p for p in range(num_processes) if p != process_id]
    self._timeout_s = timeout_s
    self._on_lost = on_lost
    self._interval_s = interval_s
    self._step = _BUSY  # Compiling the first step takes no step.
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, name="byol_jax.peers", daemon=True)
    self._thread.start()
    # Registered after jax.distributed's own shutdown, so it runs before it: a process that exits
    # on an error stops ticking instead of looking alive while it waits at the shutdown barrier.
    atexit.register(self._stop_ticking)

  def at_step(self, step):
    """The training loop reached `step`: from now on its step must advance."""
    self._step = str(step)

  def busy(self):
    """A phase that takes no steps (saving, exporting, evaluating) begins."""
    self._step = _BUSY

  def finished(self):
    """Stops watching and tells the others this process ends on purpose."""
    self._stop_ticking()
    self._client.key_value_set(_key(self._process_id), _FINISHED, allow_overwrite=True)

  def _stop_ticking(self):
    self._stop.set()
    self._thread.join()

  def _run(self):
    ticks = 0
    unreachable_since = None
    last_tick, last_step = {}, {}  # Peer -> (its last value, when that value was first seen).
    while not self._stop.wait(self._interval_s):
      ticks += 1
      now = time.monotonic()
      try:
        self._client.key_value_set(_key(self._process_id), f"{ticks} {self._step}",
                                   allow_overwrite=True)
        values = dict(self._client.key_value_dir_get(_PREFIX))
        unreachable_since = None
      except Exception as error:  # pylint: disable=broad-except  # The store lives in process 0.
        unreachable_since = unreachable_since or now
        if now - unreachable_since > self._timeout_s:
          self._on_lost(f"process 0, which holds the run's coordination service, is unreachable "
                        f"for {self._timeout_s:g} s: {first_line(error)}")
          return
        continue
      steps = {}
      for peer in self._others:
        value = values.get(_key(peer))
        if value == _FINISHED:
          continue
        tick, _, step = (value or "").partition(" ")
        steps[peer] = step
        if _unchanged_for(last_tick, peer, tick, now) > self._timeout_s:
          self._on_lost(f"process {peer} gave no sign of life for {self._timeout_s:g} s")
          return
        # Judged only while this process trains too: one that compiles or saves holds the others
        # at a collective, and their steps stay the same meanwhile.
        stepping = step and step != _BUSY and self._step != _BUSY
        if stepping and _unchanged_for(last_step, peer, step, now) > self._timeout_s:
          everyone = ", ".join(
              f"{p}: {s or '?'}" for p, s in {self._process_id: self._step, **steps}.items())
          self._on_lost(f"process {peer} took no training step for {self._timeout_s:g} s, at step "
                        f"{step} (steps now: {everyone}; {_BUSY} = not training)")
          return


def _unchanged_for(last, peer, value, now):
  """Seconds `peer`'s `value` has stayed the same (0 when it just changed); updates `last`."""
  if peer not in last or last[peer][0] != value:
    last[peer] = (value, now)
  return now - last[peer][1]
