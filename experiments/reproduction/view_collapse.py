r"""Whether a finished run's projections tell images apart or only the two kinds of view.

    python -m experiments.reproduction.view_collapse RUN [RUN ...]

RUN is a run's workdir (its latest checkpoint) or a config file, CONFIG[:PRESET] (its step-0
network, with the modified init where the config asks for it).

BYOL's two views are drawn differently (blur with probability 1.0 against 0.1, solarization 0
against 0.2), so a network can predict one view's projection from the other's by encoding which
kind of view it saw and nothing of the image: positive and negative cosine are then equal and
below 1, and only the cosine of two images under the same kind of view, near 1, shows it. For
each run this takes that network, draws both views of the first pretraining batch and reports
losses.collapse_metrics of the online embedding and projection: the mean cosine of positive
pairs, of negative pairs across the two views and within a view, and the spread. Writes
experiments/results/view_collapse.md.
"""
import json
import pathlib
import sys

import jax
import ml_collections

from byol_jax import checkpoint
from byol_jax import config as config_lib
from byol_jax import losses
from byol_jax import model
from byol_jax import run
from byol_jax import train
import experiments
from experiments import machine

OUTPUTS = ("embedding", "projection")


def _config_and_workdir(run_spec):
  """A run's workdir (its own config.json), or a config file: its step-0 network, no workdir."""
  path = pathlib.Path(run_spec)
  if path.is_dir():
    if not (path / "config.json").exists():
      sys.exit(f"[view_collapse] {path} has no config.json: is it a byol_jax workdir?")
    return ml_collections.ConfigDict(json.loads((path / "config.json").read_text())), path
  return config_lib.from_file(run_spec), None


def view_cosines(run_spec):
  """(step, {output: losses.collapse_metrics}) of the run's latest checkpoint or its step 0."""
  config, workdir = _config_and_workdir(run_spec)
  config = config_lib.validate(config)
  plan = run.plan(config)
  if workdir is None:
    state = run.untrained_state(plan)
  else:
    checkpointer = checkpoint.Checkpointer(workdir / "checkpoints")
    state = run.latest_state(plan, checkpointer).state
    checkpointer.close()
  batch = next(iter(run.host_batches(plan, 0)))
  network = model.make_network(config)

  def forward(params, net_state, batch):
    """Both views through the online network, as the train step sees them."""
    views = train.augment_views(config, batch, 0)
    return train.apply_to_views(network, params, net_state, views)[0]

  params, net_state = train.replicate((state.online_params, state.online_state))
  outputs = jax.pmap(forward, axis_name=model.AXIS)(params, net_state, batch)
  outputs = [jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), out) for out in outputs]
  stats = {
      name: {
          k: float(v) for k, v in losses.collapse_metrics(*(out[name] for out in outputs)).items()
      } for name in OUTPUTS
  }
  return int(state.step), stats


def main(runs):
  results = {spec: view_cosines(spec) for spec in runs}
  columns = list(next(iter(results.values()))[1]["projection"])
  rows = [
      "| run | step | output | " + " | ".join(columns) + " |", "|" + " --- |" * (3 + len(columns))
  ]
  for spec, (step, stats) in results.items():
    for name, values in stats.items():
      rows.append(f"| `{spec}` | {step} | {name} | " +
                  " | ".join(f"{values[c]:.3f}" for c in columns) + " |")
  table = "\n".join(rows)
  print(table)
  out = experiments.RESULTS / "view_collapse.md"
  out.write_text("# Positive, negative and within-view cosines of finished runs\n\n"
                 "`python -m experiments.reproduction.view_collapse " + " ".join(runs) +
                 f"` on {machine.cpu_name()}, first pretraining batch, the online network.\n\n" +
                 table + "\n")
  print(f"Wrote {out}")


if __name__ == "__main__":
  if len(sys.argv) < 2:
    sys.exit("usage: python -m experiments.reproduction.view_collapse RUN [RUN ...] "
             "(a workdir or CONFIG[:PRESET])")
  main(sys.argv[1:])
