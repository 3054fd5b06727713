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


def test_an_unreachable_store_is_a_lost_coordinator():
  store = _Store()
  (zero, one), lost = _watches(store, 2)
  store.broken = True
  time.sleep(0.3)
  assert lost[1] == [
      "process 0, which holds the run's coordination service, is unreachable: UNAVAILABLE: "
      "failed to connect to all addresses"
  ]
  for watch in (zero, one):
    watch._stop_ticking()  # pylint: disable=protected-access
