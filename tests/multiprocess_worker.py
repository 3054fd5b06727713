"""One of 2 processes x 2 CPU devices running 3 training steps (spawned by test_train.py).

Usage: python multiprocess_worker.py PORT PROCESS_ID OUTPUT.npz [config overrides as JSON]
"""
import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

sys.path.insert(0, os.path.dirname(__file__))
import train_helpers  # pylint: disable=g-import-not-at-top
from byol_jax import train  # pylint: disable=g-import-not-at-top

STEPS = 3


def main(port, process_id, output, overrides):
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
  config = train_helpers.small_config(**overrides)
  state = train.init_state(config, jax.random.PRNGKey(config.seed),
                           image_shape=(16, 16, 3), num_classes=train_helpers.NUM_CLASSES,
                           steps_per_epoch=10)
  update = train.map_over_devices(train.make_update(
      config, num_classes=train_helpers.NUM_CLASSES, steps_per_epoch=10))
  state = train.replicate(state)
  losses = []
  for step in range(STEPS):
    batch = train_helpers.global_batch(config, step, jax.device_count())
    local = {k: v[2 * process_id:2 * process_id + 2] for k, v in batch.items()}
    state, metrics = update(state, local)
    losses.append(float(metrics["loss"][0]))
  if process_id == 0:
    params = train.unreplicate(state.online_params)
    np.savez(output, losses=np.array(losses),
             **{f"{m}|{n}": v for m, leaves in params.items() for n, v in leaves.items()})
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
       json.loads(sys.argv[4]) if len(sys.argv) > 4 else {})
