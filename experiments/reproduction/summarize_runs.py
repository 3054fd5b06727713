r"""One table row per finished run: its recipe's varied keys, its evaluation, its random init's.

    python -m experiments.reproduction.summarize_runs WORKDIR [WORKDIR ...] --out=protocol_pilots

Reads each workdir's config.json, eval.json and metrics.jsonl (final cosines: the mean of the last
five logged batches) and writes experiments/results/OUT.md and .json.
"""
import argparse
import json
import pathlib

import experiments
from experiments import machine
from experiments.reproduction import protocol_screen

RESULTS = experiments.RESULTS
_LAST = 5


def summarize(workdir):
  workdir = pathlib.Path(workdir)
  config = json.loads((workdir / "config.json").read_text())
  evaluation = json.loads((workdir / "eval.json").read_text())
  with open(workdir / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  last = records[-_LAST:]
  return dict(dataset=config["dataset"], norm=config["norm"], init=config["init"],
              image_size=config["image_size"], hue=config["view1"]["hue"], epochs=config["epochs"],
              base_lr=config["base_lr"], tau_base=config["tau_base"], seed=config["seed"],
              eval_split=config["eval"]["test_split"] or "default", linear=100 * evaluation["top1"],
              random_linear=100 * evaluation["random_init_top1"], knn=100 * evaluation["knn_top1"],
              random_knn=100 * evaluation["random_init_knn_top1"],
              pos_cos=sum(r["positive_cosine"] for r in last) / len(last),
              neg_cos=sum(r["negative_cosine"] for r in last) / len(last), knn_monitor=[
                  (r["step"], r["knn_top1"]) for r in records if "knn_top1" in r
              ])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("workdirs", nargs="+")
  parser.add_argument("--out", required=True, help="results/OUT.md and .json")
  args = parser.parse_args()
  rows = [summarize(workdir) for workdir in args.workdirs]
  (RESULTS / f"{args.out}.json").write_text(
      json.dumps({"cpu": machine.cpu_name(), "runs": rows}, indent=1))
  columns = [
      "dataset", "norm", "init", "image_size", "hue", "epochs", "base_lr", "tau_base", "seed",
      "eval_split", "linear", "random_linear", "knn", "random_knn", "pos_cos", "neg_cos"
  ]
  lines = [
      f"# Runs: {args.out}", "",
      f"`python -m experiments.reproduction.summarize_runs WORKDIR ... --out={args.out}` on "
      f"{machine.cpu_name()}: top-1 (%) of the final encoder and of its step-0 encoder (random), "
      f"cosines of the last {_LAST} logged batches.", ""
  ] + protocol_screen.table(rows, columns)
  (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
