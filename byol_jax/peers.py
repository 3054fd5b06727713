"""Signs of life between the processes of a multi-process run.

A process killed while its peers wait for it does not always fail their collective (gloo may just
wait), and JAX's distributed runtime then aborts them on a missed heartbeat with no word about the
run. So every process ticks a counter in the distributed key-value store each second and reads the
others'; a peer whose counter stops for `timeout_s` without saying it finished is lost, and
`on_lost` ends this process with that news. A process ends its ticks as it exits, whatever the
cause, so its peers also learn of a crash; it says "finished" only when it ends on purpose (done, or
stopped to resume).
"""
import atexit
import threading
import time

from jax._src import distributed  # The client jax.distributed.initialize connected.

_PREFIX = "byol_jax/peers/"
_FINISHED = "finished"


def first_line(error):
  """An error's first line, at most 300 characters: what a lost-peer report quotes."""
  return str(error).strip().splitlines()[0][:300]


def _key(process_id):
  return f"{_PREFIX}{process_id}"


class Watch:
  """Ticks for this process and watches the others' ticks on a daemon thread."""

  def __init__(self, process_id, num_processes, timeout_s, on_lost, interval_s=1.0, client=None):
    """`client`: the key-value store; by default the one jax.distributed.initialize connected."""
    self._client = client or distributed.global_state.client
    self._process_id = process_id
    self._others = [p for p in range(num_processes) if p != process_id]
    self._timeout_s = timeout_s
    self._on_lost = on_lost
    self._interval_s = interval_s
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, name="byol_jax.peers", daemon=True)
    self._thread.start()
    # Registered after jax.distributed's own shutdown, so it runs before it: a process that exits
    # on an error stops ticking instead of looking alive while it waits at the shutdown barrier.
    atexit.register(self._stop_ticking)

  def finished(self):
    """Stops watching and tells the others this process ends on purpose."""
    self._stop_ticking()
    self._client.key_value_set(_key(self._process_id), _FINISHED, allow_overwrite=True)

  def _stop_ticking(self):
    self._stop.set()
    self._thread.join()

  def _run(self):
    ticks = 0
    last_change = {}  # Peer -> (its last counter, when it last changed).
    while not self._stop.wait(self._interval_s):
      ticks += 1
      try:
        self._client.key_value_set(_key(self._process_id), str(ticks), allow_overwrite=True)
        values = dict(self._client.key_value_dir_get(_PREFIX))
      except Exception as error:  # pylint: disable=broad-except  # The store lives in process 0.
        self._on_lost(f"process 0, which holds the run's coordination service, is unreachable: "
                      f"{first_line(error)}")
        return
      now = time.monotonic()
      for peer in self._others:
        value = values.get(_key(peer))
        if value == _FINISHED:
          continue
        if peer not in last_change or last_change[peer][0] != value:
          last_change[peer] = (value, now)
        elif now - last_change[peer][1] > self._timeout_s:
          self._on_lost(f"process {peer} gave no sign of life for {self._timeout_s:g} s")
          return
