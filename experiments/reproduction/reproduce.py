r"""Reproduces the paper's Table 2 and Table 1 and the blog's collapse check, one command each.

    python -m experiments.reproduction.reproduce --table=2     # 4 variants x 3 seeds, CPU scale
    python -m experiments.reproduction.reproduce --table=1     # encoder/projector/predictor norms
    python -m experiments.reproduction.reproduce --table=init  # no norm: Haiku vs He vs bn_stats
    python -m experiments.reproduction.reproduce --table=2 --scale=full --root=gs://BUCKET/repro \
        -- --multihost_tpu --config.data_dir=gs://BUCKET/tfds    # ImageNet, on every pod worker

Every run is `python -m byol_jax.main` in its own process and workdir (ROOT/table<N>/<variant>/
seed<S>); a run is done when its eval.json exists, and an unfinished one resumes from its
checkpoint, so an interrupted reproduction continues where it stopped when the same command is run
again. Flags after `--` go to every run. When the runs are done (or with --report_only) it writes
experiments/results/table<N>_<scale>.md and PNG plots of the loss, the online probe's accuracy and
the positive/negative cosine similarity over training, averaged over seeds. After rerunning some
variants (`--variants`) the table keeps the others' records (`--drop_previous`: it does not).

`--scale=cpu` runs each config's `tiny` preset (ResNet-18 at width 1/4, 32 px, 30 epochs of the
embedded shapes10 dataset, 60 for GN + WS; 6-7 minutes a run on 2 cores, 21-22 for GN + WS);
`--scale=full` runs the config files unchanged (ResNet-50, ImageNet, batch 4096, 1000 epochs for
Table 2 and 300 for Table 1, as in the paper).
"""
import argparse
import collections
import json
import shlex
import subprocess
import sys
import time

from etils import epath
import numpy as np

import experiments
from experiments import machine

REPO, RESULTS = experiments.REPO, experiments.RESULTS

Variant = collections.namedtuple("Variant", "name config overrides batch_stats paper")

# Paper Table 2 (ResNet-50, ImageNet, 1000 epochs, linear top-1).
TABLE2 = (
    Variant("bn", "byol", {}, "yes", "74.3"),
    Variant("none", "byol", {"norm": "none"}, "no", "0.1 (collapse)"),
    Variant("none_bn_stats", "byol_bn_stats", {}, "no", "65.7"),
    Variant("gn_ws", "byol_gn_ws", {}, "no", "73.9"),
)


def _norms(encoder, projector, predictor):
  return {"norm": encoder, "projector_norm": projector, "predictor_norm": predictor}


# Paper Table 1 (300 epochs): normalization of encoder / projector / predictor, BYOL and SimCLR.
# The paper quotes 0.1 for BYOL without any BN and 72.1 with BN in the encoder only.
TABLE1 = (
    Variant("byol_bn_bn_bn", "byol", _norms("bn", "bn", "bn"), "yes", ""),
    Variant("byol_bn_none_none", "byol", _norms("bn", "none", "none"), "yes", "72.1"),
    Variant("byol_none_bn_bn", "byol", _norms("none", "bn", "bn"), "yes", ""),
    Variant("byol_none_bn_none", "byol", _norms("none", "bn", "none"), "yes", ""),
    Variant("byol_none_none_bn", "byol", _norms("none", "none", "bn"), "yes", ""),
    Variant("byol_none_none_none", "byol", _norms("none", "none", "none"), "no", "0.1"),
    Variant("byol_ln_ln_ln", "byol", _norms("ln", "ln", "ln"), "no", ""),
    Variant("simclr_bn_bn", "simclr", _norms("bn", "bn", "bn"), "yes", ""),
    Variant("simclr_none_none", "simclr", _norms("none", "none", "none"), "no", ""),
)
# The init ablation (the paper's hypothesis that BN compensates for an improper standard init):
# no normalization with Haiku's standard init (the default), He init, and the modified init on each.
TABLE_INIT = (
    Variant("none_haiku_init", "byol", {"norm": "none"}, "no", "0.1 (collapse)"),
    Variant("none_he_init", "byol", {"norm": "none", "conv_init": "he"}, "no", ""),
    Variant("bn_stats_haiku_init", "byol_bn_stats", {}, "no", "65.7"),
    Variant("bn_stats_he_init", "byol_bn_stats", {"conv_init": "he"}, "no", ""),
)
TABLES = {"1": TABLE1, "2": TABLE2, "init": TABLE_INIT}

# The full scale changes only the length of Table 1 and of the init ablation (300 epochs, as
# Table 1); the CPU scale is each config's `tiny` preset.
FULL_OVERRIDES = {"1": {"epochs": 300}, "2": {}, "init": {"epochs": 300}}


def run_command(variant, seed, workdir, scale, table, extra_flags):
  """The `byol_jax.main` command line of one run."""
  preset = ":tiny" if scale == "cpu" else ""
  overrides = {
      **(FULL_OVERRIDES[table] if scale == "full" else {}), **variant.overrides, "seed": seed
  }
  return ([
      sys.executable, "-m", "byol_jax.main", f"--config=configs/{variant.config}.py{preset}",
      f"--workdir={workdir}"
  ] + [f"--config.{k}={v}" for k, v in overrides.items()] + list(extra_flags))


def run_all(variants, seeds, root, scale, table, extra_flags):
  """Runs every (variant, seed) that has no eval.json yet; resumes unfinished ones."""
  for variant in variants:
    for seed in seeds:
      workdir = root / variant.name / f"seed{seed}"
      if (workdir / "eval.json").exists():
        continue
      command = run_command(variant, seed, workdir, scale, table, extra_flags)
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


def _read_run(workdir):
  """(eval.json, the logged metrics, reproduce.json) of a finished run."""
  metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  attempts = json.loads((workdir / "reproduce.json").read_text())
  return json.loads((workdir / "eval.json").read_text()), metrics, attempts


def _mean_std(values, scale=1.0):
  values = np.asarray(values, dtype=float) * scale
  return f"{values.mean():.1f} ± {values.std():.1f}" if len(values) > 1 else f"{values[0]:.1f}"


# Training metrics a record keeps, each averaged over the run's last logged batches.
_FINAL_METRICS = ("positive_cosine", "negative_cosine", "within_view_cosine", "projection_std")


def _final(metrics, key, last=5):
  """The mean of `key` over the last `last` logged steps (the logged values are single batches)."""
  return float(np.mean([m[key] for m in metrics[-last:]]))


def report(variants, seeds, root, scale, table, command, keep_previous=True):
  """Writes the Markdown and JSON tables and the plots of the finished runs; returns the table.

  With `keep_previous` the (variant, seed) records of the table's existing JSON that have no
  finished run under `root` are kept, each with the command that reported it, so rerunning one
  variant loses none of the others; the plots show only the runs under `root`.
  """
  runs = {}
  for variant in variants:
    done = [s for s in seeds if (root / variant.name / f"seed{s}" / "eval.json").exists()]
    if done:
      runs[variant.name] = (variant, [_read_run(root / variant.name / f"seed{s}") for s in done],
                            done)
  if table.isdigit():
    name, title = f"table{table}_{scale}", f"Table {table}, {scale} scale"
  else:
    name, title = f"{table}_ablation_{scale}", f"The {table} ablation, {scale} scale"
  records = _per_seed_records(runs, command)
  previous = RESULTS / f"{name}.json"
  # Kept records may be of any variant of the table, not only of those asked for now.
  table_variants = TABLES[table]
  kept = _previous_records(previous, table_variants,
                           records) if keep_previous and previous.exists() else []
  order = {v.name: i for i, v in enumerate(table_variants)}
  records = sorted(kept + records, key=lambda r: (order[r["variant"]], r["seed"]))
  if not records:
    sys.exit(f"[reproduce] no finished runs under {root}.")
  text = _markdown(table_variants, records)
  if runs:
    _plot(runs, RESULTS / name)
  (RESULTS /
   f"{name}.json").write_text(json.dumps({"command": command, "runs": records}, indent=1) + "\n")
  kept_seeds = collections.defaultdict(list)
  for r in kept:
    kept_seeds[r["variant"], r["reported_by"]].append(str(r["seed"]))
  kept_note = "".join(f"\n\nKept from the previous table: {variant} seeds {', '.join(seeds)}, "
                      f"reported by `{by}` (not in the plots)."
                      for (variant, by), seeds in kept_seeds.items())
  (RESULTS / f"{name}.md").write_text(
      f"# {title}\n\nCommand: `{command}`\n\n{text}{kept_note}\n\n"
      f"Plots: {name}_curves.png, {name}_cosine.png. Linear and kNN "
      "top-1 are mean ± std over seeds of the final encoder; pos/neg cos and proj std are the "
      "last 5 logged training batches' online projections (proj std: per-dimension std of the "
      "l2-normalised projections times sqrt(dim); 0 = collapsed).\n")
  return text


def _previous_records(path, variants, records):
  """The records of `path` for `variants` that `records` does not replace."""
  previous = json.loads(path.read_text())
  names = {v.name for v in variants}
  replaced = {(r["variant"], r["seed"]) for r in records}
  return [{**r, "reported_by": r.get("reported_by", previous["command"])}
          for r in previous["runs"]
          if r["variant"] in names and (r["variant"], r["seed"]) not in replaced]


def _markdown(variants, records):
  """One row per variant: mean ± std over its seeds' records."""
  header = ("| variant | batch stats | paper top-1 | linear top-1 (%) | kNN top-1 (%) | "
            "random-init linear (%) | pos cos | neg cos | within-view cos | proj std | seeds | "
            "steps | wall / run | CPU |")
  lines = [header, "|" + " --- |" * (header.count("|") - 1)]
  for variant in variants:
    rows = [r for r in records if r["variant"] == variant.name]
    if not rows:
      continue
    random_init = [r["random_init_linear_top1"] for r in rows]
    random_init_cell = "–" if None in random_init else _mean_std(random_init, 100)
    final_cells = [f"{np.mean([r[key] for r in rows]):.3f}" for key in _FINAL_METRICS]
    steps = ", ".join(sorted({str(r["steps"]) for r in rows}))
    wall = f"{np.mean([r['wall_s'] for r in rows]) / 60:.1f} min"
    cpus = ", ".join(sorted({r.get("cpu", "unknown") for r in rows}))
    lines.append("| " + " | ".join([
        variant.name, variant.batch_stats, variant.paper or "–",
        _mean_std([r["linear_top1"] for r in rows], 100),
        _mean_std([r["knn_top1"] for r in rows], 100), random_init_cell, *final_cells,
        str(len(rows)), steps, wall, cpus
    ]) + " |")
  total_minutes = sum(r["wall_s"] for r in records) / 60
  lines.append(f"\nWall time of all {len(records)} runs: {total_minutes:.1f} min (each run's whole "
               "command, its evaluation and random-init baseline included).")
  return "\n".join(lines)


def _per_seed_records(runs, command):
  """One record per (variant, seed): the numbers the Markdown table averages."""
  records = []
  for variant, results, seeds in runs.values():
    for (evaluation, metrics, attempts), seed in zip(results, seeds):
      final = {key: _final(metrics, key) for key in _FINAL_METRICS}
      records.append({
          "variant": variant.name, "seed": seed, "config": variant.config,
          "overrides": variant.overrides, "paper_top1": variant.paper or None,
          "linear_top1": evaluation["top1"], "knn_top1": evaluation["knn_top1"],
          "random_init_linear_top1": evaluation.get("random_init_top1"),
          "random_init_knn_top1": evaluation.get("random_init_knn_top1"),
          **final, "steps": metrics[-1]["step"], "wall_s": attempts["wall_s"],
          "cpu": ", ".join(attempts.get("cpus", [])) or "unknown", "reported_by": command
      })
  return records


def _plot(runs, prefix):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  def curve(results, key):
    steps = [m["step"] for m in results[0][1]]
    values = np.mean([[m[key] for m in r[1][:len(steps)]] for r in results], axis=0)
    return steps, values

  panels = {"curves": ("loss", "probe_accuracy"), "cosine": ("positive_cosine", "negative_cosine")}
  for panel, keys in panels.items():
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in zip(axes, keys):
      for name, (_, results, _) in runs.items():
        ax.plot(*curve(results, key), label=name)
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
  parser.add_argument("--seeds", default=None,
                      help="Comma-separated; default 0,1,2 for Table 2 and 0 for Table 1.")
  parser.add_argument("--variants", default=None, help="Comma-separated subset of the table.")
  parser.add_argument("--root", default=str(REPO / "workdirs" / "reproduce"))
  parser.add_argument("--report_only", action="store_true")
  parser.add_argument(
      "--drop_previous", action="store_true",
      help="Write only the runs under --root; by default the existing JSON table's records of the "
      "variants and seeds not run there are kept (e.g. after rerunning one with --variants).")
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
  seeds = [int(s) for s in (args.seeds or ("0,1,2" if args.table == "2" else "0")).split(",")]
  root = epath.Path(args.root) / f"table{args.table}_{args.scale}"
  if not args.report_only:
    run_all(variants, seeds, root, args.scale, args.table, extra_flags)
  command = "python -m experiments.reproduction.reproduce " + shlex.join(sys.argv[1:])
  print(
      report(variants, seeds, root, args.scale, args.table, command,
             keep_previous=not args.drop_previous))


if __name__ == "__main__":
  main()
