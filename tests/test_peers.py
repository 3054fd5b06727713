"""peers.Watch against an in-memory key-value store: what it reports lost, and what it does not."""
import threading
import time

from byol_jax import peers


class _Store:
  """The two calls of jax's distributed client that Watch uses, in memory."""

  def __init__(self):
    self.values, self.broken = {}, False
    self._lock = threading.Lock()

  def key_value_set(self, key, value, allow_overwrite=False):
    del allow_overwrite
    with self._lock:
      self.values[key] = value

  def key_value_dir_get(self, prefix):
    if self.broken:
      raise RuntimeError("UNAVAILABLE: failed to connect to all addresses\nmore detail")
    with self._lock:
      return [(k, v) for k, v in self.values.items() if k.startswith(prefix)]


def _watches(store, num_processes, timeout_s=0.5):
  lost = [[] for _ in range(num_processes)]
  watches = [
      peers.Watch(p, num_processes, timeout_s, on_lost=lost[p].append, interval_s=0.02,
                  client=store) for p in range(num_processes)
  ]
  return watches, lost


def test_a_peer_that_stops_ticking_is_lost_and_one_that_finished_is_not():
  store = _Store()
  (zero, one, two), lost = _watches(store, 3)
  time.sleep(0.3)
  two.finished()  # Ends on purpose: never reported.
  time.sleep(1.0)  # All alive or finished: nothing reported, however long.
  assert lost == [[], [], []]
  one._stop_ticking()  # pylint: disable=protected-access  # What a crash's exit does.
  time.sleep(1.0)
  assert lost[0] == ["process 1 gave no sign of life for 0.5 s"]
  assert not lost[1] and not lost[2]
  zero.finished()


def test_a_store_that_fails_for_a_moment_is_retried_and_one_that_stays_down_is_lost():
  store = _Store()
  (zero, one), lost = _watches(store, 2)
  store.broken = True
  time.sleep(0.3)  # Shorter than the timeout: retried, nobody is lost.
  store.broken = False
  time.sleep(0.3)
  assert lost == [[], []]
  store.broken = True
  time.sleep(1.0)
  assert lost[1] == [
      "process 0, which holds the run's coordination service, is unreachable for 0.5 s: "
      "UNAVAILABLE: failed to connect to all addresses"
  ]
  for watch in (zero, one):
    watch._stop_ticking()  # pylint: disable=protected-access


def test_a_peer_whose_loop_stops_while_its_thread_ticks_is_lost_unless_busy():
  store = _Store()
  (zero, one), lost = _watches(store, 2)
  zero.at_step(5)
  one.busy()  # Compiling or saving: takes no step, and is not judged on steps.
  time.sleep(1.0)
  assert lost == [[], []]
  for step in range(6, 40):  # Both train: steps advance, nobody is lost.
    zero.at_step(step)
    one.at_step(step)
    time.sleep(0.02)
  assert lost == [[], []]
  zero.at_step(40)  # Process 1's thread still ticks, but its loop stays at step 39.
  time.sleep(1.0)
  assert lost[0] and lost[0][0].startswith("process 1 took no training step for 0.5 s, at step 39")
  for watch in (zero, one):
    watch._stop_ticking()  # pylint: disable=protected-access
