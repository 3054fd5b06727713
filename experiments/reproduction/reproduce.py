r"""Reproduces the paper's Table 2 and Table 1, one command each, cell by cell beside the paper.

    python -m experiments.reproduction.reproduce --table=2 --seeds=0,1,2,3,4  # CPU, validation
    python -m experiments.reproduction.reproduce --table=1 --seeds=0,1        # all 22 cells
    python -m experiments.reproduction.reproduce --table=2 --split=test       # the final read
    python -m experiments.reproduction.reproduce --table=2 --scale=full --root=gs://BUCKET/repro \
        -- --multihost_tpu --config.data_dir=gs://BUCKET/tfds    # ImageNet, on every pod worker

Every run is `python -m byol_jax.main` in its own process and workdir
(ROOT/table<N>_<scale>[_<split>]/<variant>/seed<S>); a run is done when its eval.json exists, and an
unfinished one resumes from its checkpoint, so an interrupted reproduction continues where it
stopped when the same command is run again. Flags after `--` go to every run. When the runs are done
(or with --report_only) it writes experiments/results/table<N>_<scale>[_<split>].md and .json, and
plots of the loss, the online probe's accuracy and the cosines over training, averaged over seeds.
The JSON keeps each run's record (its numbers, curves and config.json): a run whose workdir is not
on this machine keeps its place in the table through its record, which passes the same config check
as a workdir.

`--scale=cpu` runs each config's `tiny` preset under the CPU protocol (CPU_PROTOCOL, chosen on
textures10's validation split: experiments/results/protocol_design.md): 36 px, 30 epochs for every
row. `--split=validation` (default) is for designing; `--split=test` reads the test split, once per
final table. `--scale=full` runs the config files unchanged (ResNet-50, ImageNet, batch 4096, 1000
epochs for Table 2 and 300 for Table 1, as in the paper).

A row's verdict follows ../shared/DESIGN.md: it "collapses" when its positive and negative cosines
are both >= 0.99 or its linear top-1 is at or under its random init's; it "learns" when, over 2 or
more seeds, the lower ends of its linear and kNN intervals (t-based 95%) lie above every random
init of the table and above raw pixels (experiments/results/baselines_<dataset>.json, when measured
on this split); otherwise it is "unclear". The paper's rows are either >= 53.8 (learns) or <= 5.4
(fails); a row agrees when it learns where the paper's learns and collapses where the paper's fails.
"""
import argparse
import collections
import json
import re
import shlex
import subprocess
import sys
import time

from etils import epath
import numpy as np

from byol_jax import config as config_lib
import experiments
from experiments import machine
from experiments.reproduction import intervals

REPO, RESULTS = experiments.REPO, experiments.RESULTS

# paper: the paper's ImageNet linear top-1 (%), None where the paper has no such row.
Variant = collections.namedtuple("Variant", "name config overrides paper")

# Paper Table 2 (ResNet-50, ImageNet, 1000 epochs).
TABLE2 = (
    Variant("bn", "byol", {}, 74.3),
    Variant("none", "byol", {"norm": "none"}, 0.1),
    Variant("bn_stats", "byol_bn_stats", {}, 65.7),
    Variant("gn_ws", "byol_gn_ws", {}, 73.9),
)


def _byol(encoder, projector, predictor, paper):
  norms = {"norm": encoder, "projector_norm": projector, "predictor_norm": predictor}
  return Variant(f"byol_{encoder}_{projector}_{predictor}", "byol", norms, paper)


def _simclr(encoder, projector, paper):
  norms = {"norm": encoder, "projector_norm": projector}
  return Variant(f"simclr_{encoder}_{projector}", "simclr", norms, paper)


# Paper Table 1 (300 epochs): the norm of the encoder / projector / predictor; "none" is the paper's
# "-". SimCLR has no predictor.
TABLE1 = (
    _byol("bn", "bn", "bn", 73.2),
    _byol("bn", "bn", "none", 73.2),
    _byol("bn", "none", "bn", 72.0),
    _byol("bn", "none", "none", 72.1),
    _byol("ln", "ln", "ln", 0.1),
    _byol("ln", "ln", "none", 5.4),
    _byol("ln", "none", "ln", 0.1),
    _byol("ln", "none", "none", 0.1),
    _byol("none", "bn", "bn", 62.6),
    _byol("none", "bn", "none", 0.1),
    _byol("none", "ln", "ln", 0.1),
    _byol("none", "ln", "none", 0.1),
    _byol("none", "none", "bn", 61.1),
    _byol("none", "none", "ln", 0.1),
    _byol("none", "none", "none", 0.1),
    _simclr("bn", "bn", 69.3),
    _simclr("bn", "none", 68.5),
    _simclr("ln", "ln", 68.0),
    _simclr("ln", "none", 67.8),
    _simclr("none", "bn", 53.8),
    _simclr("none", "ln", 56.7),
    _simclr("none", "none", 0.1),
)
# The init ablation (the paper's hypothesis that BN compensates for an improper standard init):
# no normalization with Haiku's standard init (the default), He init, and the modified init on each.
TABLE_INIT = (
    Variant("none_haiku_init", "byol", {"norm": "none"}, 0.1),
    Variant("none_he_init", "byol", {"norm": "none", "conv_init": "he"}, None),
    Variant("bn_stats_haiku_init", "byol_bn_stats", {}, 65.7),
    Variant("bn_stats_he_init", "byol_bn_stats", {"conv_init": "he"}, None),
)
TABLES = {"1": TABLE1, "2": TABLE2, "init": TABLE_INIT}

# What the CPU scale changes in every row's tiny preset (protocol_design.md says why): the last
# feature map 2x2, a second generated dataset with a validation split, the same epochs everywhere.
CPU_PROTOCOL = {"dataset": "textures10", "image_size": 36, "epochs": 30}
SPLITS = ("validation", "test")
# The full scale changes only the length of Table 1 and of the init ablation (300 epochs).
FULL_OVERRIDES = {"1": {"epochs": 300}, "2": {}, "init": {"epochs": 300}}
# The paper's rows are >= 53.8 or <= 5.4: this splits them into "learns" and "fails".
PAPER_LEARNS = 50.0
# Cosines of positive and negative pairs both at least this: collapsed (DESIGN.md).
COLLAPSED_COSINE = 0.99


class Protocol(collections.namedtuple("Protocol", "table scale split")):
  """Which table, at which scale, evaluated on which split (cpu only): one root, one result."""

  @property
  def name(self):
    kind = f"table{self.table}" if self.table.isdigit() else f"{self.table}_ablation"
    return f"{kind}_{self.scale}" + (f"_{self.split}" if self.scale == "cpu" else "")

  def overrides(self, variant, seed):
    """The --config overrides of one run, beyond its config file and preset."""
    base = ({**CPU_PROTOCOL, "eval.test_split": self.split}
            if self.scale == "cpu" else FULL_OVERRIDES[self.table])
    return {**base, **variant.overrides, "seed": seed}

  def config_spec(self, variant):
    return f"configs/{variant.config}.py" + (":tiny" if self.scale == "cpu" else "")


def run_command(variant, seed, workdir, protocol, extra_flags):
  """The `byol_jax.main` command line of one run."""
  return ([
      sys.executable, "-m", "byol_jax.main", f"--config={protocol.config_spec(variant)}",
      f"--workdir={workdir}"
  ] + [f"--config.{k}={v}" for k, v in protocol.overrides(variant, seed).items()] +
          list(extra_flags))


def run_all(variants, seeds, root, protocol, extra_flags):
  """Runs every (variant, seed) that has no eval.json yet; resumes unfinished ones."""
  for variant in variants:
    for seed in seeds:
      workdir = root / variant.name / f"seed{seed}"
      if (workdir / "eval.json").exists():
        continue
      command = run_command(variant, seed, workdir, protocol, extra_flags)
      print(f"[reproduce] {variant.name} seed {seed}: {shlex.join(command)}", flush=True)
      start = time.time()
      returncode = subprocess.call(command, cwd=REPO)
      _add_wall_time(workdir, time.time() - start)
      if returncode:
        sys.exit(f"[reproduce] {variant.name} seed {seed} exited with {returncode}; rerun the "
                 "same command to resume it (its log is above).")


def _add_wall_time(workdir, seconds):
  """Accumulates, in reproduce.json, the wall time over the attempts of a run (resumes included)
  and the CPUs they ran on: accuracies and times differ across CPU types."""
  workdir.mkdir(parents=True, exist_ok=True)
  record = workdir / "reproduce.json"
  previous = json.loads(record.read_text()) if record.exists() else {"wall_s": 0.0, "cpus": []}
  cpus = sorted(set(previous.get("cpus", [])) | {machine.cpu_name()})
  record.write_text(json.dumps({"wall_s": previous["wall_s"] + seconds, "cpus": cpus}))


def _expected_config(variant, seed, protocol):
  config = config_lib.from_file(str(REPO / protocol.config_spec(variant)))
  config.update_from_flattened_dict(protocol.overrides(variant, seed))
  return json.loads(config.to_json_best_effort())


def check_config(saved, source, variant, seed, protocol, extra_flags):
  """Stops unless the saved config.json `saved` computes what this table's command does (config
  file, preset, protocol, variant, seed, evaluation split): a table holds one protocol. Keys the
  extra flags set are not compared. `source` names where `saved` came from, for the error."""
  expected = _expected_config(variant, seed, protocol)
  flagged = {m.group(1) for m in map(re.compile(r"--config\.(\w+)").match, extra_flags) if m}
  differ = {k: v for k, v in config_lib.changed_keys(saved, expected).items() if k not in flagged}
  if "eval" not in flagged and saved["eval"]["test_split"] != expected["eval"]["test_split"]:
    differ["eval.test_split"] = (saved["eval"]["test_split"], expected["eval"]["test_split"])
  if differ:
    listing = ", ".join(f"{k}: {a!r} there, {b!r} here" for k, (a, b) in differ.items())
    sys.exit(f"[reproduce] {source} was not run by this table's command ({listing}); move it out "
             "of the table (its workdir out of the root, its record out of the JSON) or rerun it.")


# Training metrics a record keeps, each averaged over the run's last logged batches.
_FINAL_METRICS = ("positive_cosine", "negative_cosine", "within_view_cosine", "projection_std")
# Training metrics a record keeps at every logged step, for the plots.
_CURVES = ("loss", "probe_accuracy", "positive_cosine", "negative_cosine")


def _final(metrics, key, last=5):
  """The mean of `key` over the last `last` logged steps (the logged values are single batches)."""
  return float(np.mean([m[key] for m in metrics[-last:]]))


def _record(workdir, variant, seed):
  """The record of one finished run: the numbers its table row is made of, its curves and its
  config.json, so the table's JSON can stand in for the workdir once it is gone."""
  evaluation = json.loads((workdir / "eval.json").read_text())
  metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  attempts = json.loads((workdir / "reproduce.json").read_text())
  curve = {key: [m[key] for m in metrics] for key in ("step",) + _CURVES}
  return {
      "variant": variant.name, "seed": seed, "config": variant.config,
      "overrides": variant.overrides, "paper_top1": variant.paper,
      "linear_top1": evaluation["top1"], "knn_top1": evaluation["knn_top1"],
      "random_init_linear_top1": evaluation.get("random_init_top1"),
      "random_init_knn_top1": evaluation.get("random_init_knn_top1"),
      **{key: _final(metrics, key) for key in _FINAL_METRICS}, "steps": metrics[-1]["step"],
      "wall_s": attempts["wall_s"], "cpu": ", ".join(attempts.get("cpus", [])) or "unknown",
      "curve": curve, "run_config": json.loads((workdir / "config.json").read_text())
  }


def _previous_records(protocol):
  """The records of the table's last JSON by (variant, seed): a run whose workdir is gone (runs
  done on another machine) keeps its place in the table through them."""
  path = RESULTS / f"{protocol.name}.json"
  if not path.exists():
    return {}
  return {(r["variant"], r["seed"]): r for r in json.loads(path.read_text())["runs"]}


def pixel_baseline(dataset, split):
  """Raw pixels' mean (linear, kNN) top-1 on `split`, or None where it was not measured there
  (experiments/reproduction/dataset_baselines.py measures it)."""
  path = RESULTS / f"baselines_{dataset}.json"
  if not path.exists():
    return None
  baselines = json.loads(path.read_text())
  if baselines["split"] != split:
    return None
  runs = baselines["rows"]["pixels"]
  return tuple(float(np.mean([r[key] for r in runs])) for key in ("top1", "knn_top1"))


def _lower(values):
  mean, half = intervals.mean_interval(values)
  return mean - half


def verdict(rows, floor):
  """"collapses", "learns" or "unclear" (the module docstring says when); `floor`: the (linear,
  kNN) top-1 a learning row's interval must lie above."""
  mean = lambda key: float(np.mean([r[key] for r in rows], dtype=float))
  cosines = mean("positive_cosine"), mean("negative_cosine")
  if min(cosines) >= COLLAPSED_COSINE or mean("linear_top1") <= mean("random_init_linear_top1"):
    return "collapses"
  lows = [_lower([r[key] for r in rows]) for key in ("linear_top1", "knn_top1")]
  if len(rows) >= 2 and all(low > f for low, f in zip(lows, floor)):
    return "learns"
  return "unclear"


def agrees(paper, ours):
  """Whether our verdict is the paper's: "yes", "no", or "–" where the paper has no number."""
  if paper is None:
    return "–"
  return "yes" if ours == ("learns" if paper >= PAPER_LEARNS else "collapses") else "no"


def report(variants, seeds, root, protocol, command, extra_flags=()):
  """Writes the Markdown and JSON tables and the plots of the finished runs; returns the table."""
  previous, records = _previous_records(protocol), []
  for variant in variants:
    for seed in seeds:
      workdir = root / variant.name / f"seed{seed}"
      if (workdir / "eval.json").exists():
        record = _record(workdir, variant, seed)
        source = str(workdir)
      elif (variant.name, seed) in previous:
        record = previous[(variant.name, seed)]
        source = f"the record of {variant.name} seed {seed} in {protocol.name}.json"
      else:
        continue
      check_config(record["run_config"], source, variant, seed, protocol, extra_flags)
      records.append(record)
  if not records:
    sys.exit(f"[reproduce] no finished runs under {root} or in {protocol.name}.json.")
  dataset = CPU_PROTOCOL["dataset"] if protocol.scale == "cpu" else "imagenet2012"
  pixels = pixel_baseline(dataset, protocol.split) if protocol.scale == "cpu" else None
  text, rows = _markdown(variants, records, pixels)
  _plot(variants, records, RESULTS / protocol.name)
  (RESULTS / f"{protocol.name}.json").write_text(
      json.dumps({"command": command, "pixels": pixels, "rows": rows, "runs": records}, indent=1) +
      "\n")
  protocol_line = (f"Protocol: each row's `tiny` preset with {CPU_PROTOCOL}, evaluated on "
                   f"{dataset}'s {protocol.split} split." if protocol.scale == "cpu" else
                   "Protocol: the config files unchanged (ImageNet).")
  pixel_line = ("Raw pixels on this split (not measured)" if pixels is None else
                f"Raw pixels on this split: {100 * pixels[0]:.1f} linear, {100 * pixels[1]:.1f} "
                f"kNN (baselines_{dataset}.json)")
  (RESULTS / f"{protocol.name}.md").write_text(
      f"# Table {protocol.table}, {protocol.scale} scale\n\nCommand: `{command}`\n\n"
      f"{protocol_line} {pixel_line}.\n\n{text}\n\n"
      f"Plots: {protocol.name}_curves.png, {protocol.name}_cosine.png. Top-1 (%) is mean ± t-based "
      "95% interval over seeds of the final encoder; a gain is a run's top-1 minus its own random "
      "init's, paired by seed. pos/neg cos are the last 5 logged training batches' online "
      "projections. Verdict and agreement as the docstring of "
      "experiments/reproduction/reproduce.py defines them (paper: ImageNet linear top-1).\n")
  return text


def _markdown(variants, records, pixels):
  """One row per variant over its seeds' records; returns the table and the rows as dicts."""
  by_variant = {v.name: [r for r in records if r["variant"] == v.name] for v in variants}

  def highest_mean(key):
    return max(np.mean([r[key] for r in runs], dtype=float) for runs in by_variant.values() if runs)

  floor = [highest_mean("random_init_linear_top1"), highest_mean("random_init_knn_top1")]
  if pixels is not None:
    floor = [max(f, p) for f, p in zip(floor, pixels)]
  header = ("| variant | paper | verdict | agrees | seeds | linear | kNN | random linear | "
            "random kNN | linear gain | kNN gain | pos cos | neg cos | wall / run | CPU |")
  lines, rows = [header, "|" + " --- |" * (header.count("|") - 1)], []
  for variant in variants:
    runs = by_variant[variant.name]
    if not runs:
      continue
    ours = verdict(runs, floor)
    interval = lambda f, runs=runs: intervals.format_interval([f(r) for r in runs])
    row = {
        "variant": variant.name, "paper": variant.paper, "verdict": ours,
        "agrees": agrees(variant.paper, ours), "seeds": len(runs),
        "linear": interval(lambda r: r["linear_top1"]), "kNN": interval(lambda r: r["knn_top1"]),
        "random linear": interval(lambda r: r["random_init_linear_top1"]),
        "random kNN": interval(lambda r: r["random_init_knn_top1"]),
        "linear gain": interval(lambda r: r["linear_top1"] - r["random_init_linear_top1"]),
        "kNN gain": interval(lambda r: r["knn_top1"] - r["random_init_knn_top1"]),
        "pos cos": f"{np.mean([r['positive_cosine'] for r in runs]):.2f}",
        "neg cos": f"{np.mean([r['negative_cosine'] for r in runs]):.2f}",
        "wall / run": f"{np.mean([r['wall_s'] for r in runs]) / 60:.1f} min", "CPU": ", ".join(
            sorted({r["cpu"] for r in runs}))
    }
    rows.append(row)
    cells = ["–" if value is None else str(value) for value in row.values()]
    lines.append("| " + " | ".join(cells) + " |")
  floor_text = ", ".join(f"{100 * f:.1f}" for f in floor)
  total_minutes = sum(r["wall_s"] for r in records) / 60
  lines.append(
      f"\nA row learns above (linear, kNN) = ({floor_text}): the highest random init of the "
      f"table{'' if pixels is None else ' and raw pixels'}. Wall time of all {len(records)} runs: "
      f"{total_minutes:.1f} min (each run's whole command, its evaluation and random-init baseline "
      "included).")
  return "\n".join(lines), rows


def _plot(variants, records, prefix):
  """Each variant's curves averaged over the seeds whose records have them (records written before
  records kept curves have none); the legend gives how many."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  panels = {"curves": ("loss", "probe_accuracy"), "cosine": ("positive_cosine", "negative_cosine")}
  for panel, keys in panels.items():
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in zip(axes, keys):
      for variant in variants:
        curves = [r["curve"] for r in records if r["variant"] == variant.name and "curve" in r]
        if curves:
          steps = min((c["step"] for c in curves), key=len)
          values = np.mean([c[key][:len(steps)] for c in curves], axis=0)
          ax.plot(steps, values, label=f"{variant.name} ({len(curves)} seeds)")
      ax.set_xlabel("step")
      ax.set_title(key.replace("_", " ") + " (mean over seeds)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(f"{prefix}_{panel}.png", dpi=90)
    plt.close(fig)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--table", choices=sorted(TABLES), required=True)
  parser.add_argument("--scale", choices=("cpu", "full"), default="cpu")
  parser.add_argument("--split", choices=SPLITS, default="validation",
                      help="The split the cpu scale evaluates on; test is read once per table.")
  parser.add_argument("--seeds", default="0,1,2,3,4", help="Comma-separated.")
  parser.add_argument("--variants", default=None, help="Comma-separated subset of the table.")
  parser.add_argument("--root", default=str(REPO / "workdirs" / "reproduce"))
  parser.add_argument("--report_only", action="store_true")
  args, extra_flags = parser.parse_known_args()
  if extra_flags and extra_flags[0] == "--":
    extra_flags = extra_flags[1:]
  variants = TABLES[args.table]
  if args.variants:
    by_name = {v.name: v for v in variants}
    unknown = set(args.variants.split(",")) - set(by_name)
    if unknown:
      parser.error(f"unknown variants {sorted(unknown)}; Table {args.table} has {list(by_name)}")
    variants = tuple(by_name[n] for n in args.variants.split(","))
  seeds = [int(s) for s in args.seeds.split(",")]
  protocol = Protocol(args.table, args.scale, args.split)
  root = epath.Path(args.root) / protocol.name
  if not args.report_only:
    run_all(variants, seeds, root, protocol, extra_flags)
  command = "python -m experiments.reproduction.reproduce " + shlex.join(sys.argv[1:])
  print(report(TABLES[args.table], seeds, root, protocol, command, extra_flags))


if __name__ == "__main__":
  main()
