r"""One table row per finished run: its recipe's varied keys, its evaluation, its random init's.

    python -m experiments.reproduction.summarize_runs WORKDIR [WORKDIR ...] --out=protocol_pilots

Reads each workdir's config.json, eval.json and metrics.jsonl (final cosines: the mean of the last
five logged batches) and writes experiments/results/OUT.md and .json.
"""
import argparse
import json
import pathlib

from byol_jax import config as config_lib
import experiments
from experiments import machine
from experiments.reproduction import intervals
from experiments.reproduction import protocol_screen

RESULTS = experiments.RESULTS
_LAST = 5
_RECIPE = ("dataset", "norm", "init", "bn_stats_backward", "lars_adapt", "image_size", "hue",
           "epochs", "base_lr", "tau_base", "warmup", "init_seed")
_SAME_AS_SEED = "= seed"  # The init_seed of a run whose initial weights follow config.seed.


def summarize(workdir):
  workdir = pathlib.Path(workdir)
  config = config_lib.with_defaults(json.loads((workdir / "config.json").read_text()))
  evaluation = json.loads((workdir / "eval.json").read_text())
  with open(workdir / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  last = records[-_LAST:]
  return dict(dataset=config["dataset"], norm=config["norm"], init=config["init"],
              bn_stats_backward=config["bn_stats_backward"],
              lars_adapt=config["lars_adapt_biases_and_norms"], warmup=config["warmup_epochs"],
              image_size=config["image_size"], hue=config["view1"]["hue"], epochs=config["epochs"],
              base_lr=config["base_lr"], tau_base=config["tau_base"], seed=config["seed"],
              init_seed=_SAME_AS_SEED if config["init_seed"] is None else config["init_seed"],
              eval_split=config["eval"]["test_split"] or "default", linear=100 * evaluation["top1"],
              random_linear=100 * evaluation["random_init_top1"], knn=100 * evaluation["knn_top1"],
              random_knn=100 * evaluation["random_init_knn_top1"],
              pos_cos=sum(r["positive_cosine"] for r in last) / len(last),
              neg_cos=sum(r["negative_cosine"] for r in last) / len(last), knn_monitor=[
                  (r["step"], r["knn_top1"]) for r in records if "knn_top1" in r
              ])


def by_recipe(rows):
  """One row per recipe (the runs that differ only in their seed, init_seed unset): mean ± t-based
  95% interval of each probe, and of each run's gain over its own seed's random init (paired)."""
  groups = {}
  for row in rows:
    groups.setdefault(tuple(row[k] for k in _RECIPE), []).append(row)
  summary = []
  for recipe, runs in groups.items():
    interval = lambda f, runs=runs: intervals.format_interval([f(r) / 100 for r in runs])
    group = dict(zip(_RECIPE, recipe), seeds=len(runs))
    group["linear"] = interval(lambda r: r["linear"])
    group["linear gain"] = interval(lambda r: r["linear"] - r["random_linear"])
    group["kNN"] = interval(lambda r: r["knn"])
    group["kNN gain"] = interval(lambda r: r["knn"] - r["random_knn"])
    group["pos_cos"] = f"{sum(r['pos_cos'] for r in runs) / len(runs):.2f}"
    summary.append(group)
  return summary


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("workdirs", nargs="+")
  parser.add_argument("--out", required=True, help="results/OUT.md and .json")
  args = parser.parse_args()
  rows = [summarize(workdir) for workdir in args.workdirs]
  (RESULTS / f"{args.out}.json").write_text(
      json.dumps({"cpu": machine.cpu_name(), "runs": rows}, indent=1))
  columns = list(_RECIPE[:-1]) + [
      "seed", "init_seed", "eval_split", "linear", "random_linear", "knn", "random_knn", "pos_cos",
      "neg_cos"
  ]
  lines = [
      f"# Runs: {args.out}", "",
      f"`python -m experiments.reproduction.summarize_runs WORKDIR ... --out={args.out}` on "
      f"{machine.cpu_name()}: top-1 (%) of the final encoder and of its step-0 encoder (random), "
      f"cosines of the last {_LAST} logged batches.", ""
  ] + protocol_screen.table(rows, columns)
  summary = by_recipe(rows)
  if any(group["seeds"] > 1 for group in summary):
    lines += [
        "", "Over seeds: mean ± t-based 95% interval; a gain is a run's top-1 minus its own "
        "random init's, in points.", ""
    ] + protocol_screen.table(summary, list(summary[0]))
  (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
