"""experiments/reproduction/reproduce.py: its commands, skipping finished runs, and its tables."""
import json

from etils import epath
import pytest

from experiments.reproduction import reproduce


def _fake_run(workdir, top1, knn, wall_s=60.0, cpus=("Test CPU",)):
  workdir.mkdir(parents=True)
  metrics = [{
      "step": s, "loss": 1.0, "probe_accuracy": 0.1, "positive_cosine": 0.9, "negative_cosine": 0.2,
      "within_view_cosine": 0.3, "projection_std": 0.5
  } for s in (10, 20)]
  (workdir / "metrics.jsonl").write_text("\n".join(json.dumps(m) for m in metrics))
  (workdir / "eval.json").write_text(
      json.dumps({"top1": top1, "knn_top1": knn, "random_init_top1": 0.1}))
  (workdir / "reproduce.json").write_text(json.dumps({"wall_s": wall_s, "cpus": list(cpus)}))


def test_cpu_command_uses_tiny_preset_variant_and_seed():
  variant = reproduce.TABLE2[1]  # No normalization.
  command = reproduce.run_command(variant, 2, "/w", "cpu", "2", ["--flag"])
  assert "--config=configs/byol.py:tiny" in command
  assert "--config.norm=none" in command and "--config.seed=2" in command
  assert command[-1] == "--flag" and "--workdir=/w" in command


def test_full_table1_command_trains_300_epochs_on_the_config_file():
  command = reproduce.run_command(reproduce.TABLE1[0], 0, "/w", "full", "1", [])
  assert "--config=configs/byol.py" in command and "--config.epochs=300" in command
  assert not any(arg.startswith("--config.max_steps") for arg in command)


def test_finished_runs_are_skipped_and_unfinished_ones_run(tmp_path, monkeypatch):
  root = epath.Path(tmp_path)
  _fake_run(tmp_path / "bn" / "seed0", 0.5, 0.4)
  called = []
  monkeypatch.setattr(reproduce.subprocess, "call", lambda cmd, cwd: called.append(cmd) or 0)
  reproduce.run_all(reproduce.TABLE2[:1], [0, 1], root, "cpu", "2", [])
  assert len(called) == 1 and f"--workdir={root / 'bn' / 'seed1'}" in called[0]


def test_a_failed_run_stops_with_its_name(tmp_path, monkeypatch):
  monkeypatch.setattr(reproduce.subprocess, "call", lambda cmd, cwd: 143)
  with pytest.raises(SystemExit, match="bn seed 0 exited with 143"):
    reproduce.run_all(reproduce.TABLE2[:1], [0], epath.Path(tmp_path), "cpu", "2", [])
  assert (tmp_path / "bn" / "seed0" / "reproduce.json").exists()


def test_wall_time_and_cpus_add_up_over_the_attempts_of_a_run(tmp_path, monkeypatch):
  workdir = epath.Path(tmp_path)
  monkeypatch.setattr(reproduce.machine, "cpu_name", lambda: "CPU A")
  reproduce._add_wall_time(workdir, 60.0)
  reproduce._add_wall_time(workdir, 30.0)  # A resume on the same machine.
  monkeypatch.setattr(reproduce.machine, "cpu_name", lambda: "CPU B")
  reproduce._add_wall_time(workdir, 10.0)  # And one on another.
  assert json.loads(
      (workdir / "reproduce.json").read_text()) == {"wall_s": 100.0, "cpus": ["CPU A", "CPU B"]}


def test_report_gives_mean_and_std_over_seeds(tmp_path, monkeypatch):
  monkeypatch.setattr(reproduce, "RESULTS", tmp_path)
  _fake_run(tmp_path / "runs" / "bn" / "seed0", 0.50, 0.40)
  _fake_run(tmp_path / "runs" / "bn" / "seed1", 0.60, 0.40)
  table = reproduce.report(reproduce.TABLE2, [0, 1], epath.Path(tmp_path / "runs"), "cpu", "2",
                           "python -m experiments.reproduction.reproduce --table=2")
  row = next(line for line in table.splitlines() if line.startswith("| bn "))
  assert "55.0 ± 5.0" in row and "40.0 ± 0.0" in row and "| 2 |" in row
  assert "none" not in table.split("\n", 2)[2]  # Unfinished variants are left out.
  assert (tmp_path / "table2_cpu.md").exists() and (tmp_path / "table2_cpu_cosine.png").exists()
  records = json.loads((tmp_path / "table2_cpu.json").read_text())["runs"]
  assert [(r["variant"], r["seed"], r["linear_top1"]) for r in records] == [("bn", 0, 0.50),
                                                                            ("bn", 1, 0.60)]
  assert records[0]["random_init_linear_top1"] == 0.1
  assert records[0]["positive_cosine"] == 0.9 and records[0]["projection_std"] == 0.5
  assert records[0]["cpu"] == "Test CPU" and row.endswith("| 1.0 min | Test CPU |")
  assert "Wall time of all 2 runs: 2.0 min" in table


def test_a_rerun_keeps_the_records_of_runs_not_rerun(tmp_path, monkeypatch):
  monkeypatch.setattr(reproduce, "RESULTS", tmp_path)
  runs = epath.Path(tmp_path / "runs")
  _fake_run(tmp_path / "runs" / "bn" / "seed0", 0.50, 0.40)
  _fake_run(tmp_path / "runs" / "gn_ws" / "seed0", 0.30, 0.20)
  reproduce.report(reproduce.TABLE2, [0], runs, "cpu", "2", "first")
  (tmp_path / "runs" / "bn" / "seed0" / "eval.json").unlink()  # Only gn_ws is rerun.
  (tmp_path / "runs" / "gn_ws" / "seed0" / "eval.json").write_text(
      json.dumps({"top1": 0.70, "knn_top1": 0.60, "random_init_top1": 0.1}))
  table = reproduce.report(reproduce.TABLE2[3:], [0], runs, "cpu", "2", "second")  # --variants
  records = json.loads((tmp_path / "table2_cpu.json").read_text())["runs"]
  kept = [(r["variant"], r["linear_top1"], r["reported_by"]) for r in records]
  assert kept == [("bn", 0.50, "first"), ("gn_ws", 0.70, "second")]
  assert "| bn | yes | 74.3 | 50.0 |" in table and "| gn_ws | no | 73.9 | 70.0 |" in table
  assert "Kept from the previous table: bn seeds 0, reported by `first`" in (
      tmp_path / "table2_cpu.md").read_text()
  # Without them the table holds the runs under the root only.
  assert "| bn |" not in reproduce.report(reproduce.TABLE2, [0], runs, "cpu", "2", "third",
                                          keep_previous=False)
