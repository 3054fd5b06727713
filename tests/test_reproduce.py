"""experiments/reproduction/reproduce.py: its commands, skipping finished runs, its checks, verdicts
and tables."""
import json

from etils import epath
from ml_collections import config_dict
import pytest

from byol_jax import config as config_lib
from experiments.reproduction import reproduce

VALIDATION = reproduce.Protocol("2", "cpu", "validation")


def _fake_run(workdir, top1, knn, seed=0, variant=reproduce.TABLE2[0], protocol=VALIDATION,
              cosines=(0.9, 0.2), random_init=(0.1, 0.1)):
  workdir.mkdir(parents=True)
  metrics = [{
      "step": s, "loss": 1.0, "probe_accuracy": 0.1, "positive_cosine": cosines[0],
      "negative_cosine": cosines[1], "within_view_cosine": 0.3, "projection_std": 0.5
  } for s in (10, 20)]
  (workdir / "metrics.jsonl").write_text("\n".join(json.dumps(m) for m in metrics))
  (workdir / "eval.json").write_text(
      json.dumps({
          "top1": top1, "knn_top1": knn, "random_init_top1": random_init[0],
          "random_init_knn_top1": random_init[1]
      }))
  (workdir / "reproduce.json").write_text(json.dumps({"wall_s": 60.0, "cpus": ["Test CPU"]}))
  (workdir / "config.json").write_text(
      json.dumps(reproduce._expected_config(variant, seed, protocol)))


def test_cpu_command_runs_the_tiny_preset_under_the_protocol_on_the_chosen_split():
  variant = reproduce.TABLE2[1]  # No normalization.
  command = reproduce.run_command(variant, 2, "/w", reproduce.Protocol("2", "cpu", "test"),
                                  ["--flag"])
  assert "--config=configs/byol.py:tiny" in command
  assert "--config.norm=none" in command and "--config.seed=2" in command
  assert {
      "--config.dataset=textures10", "--config.image_size=36", "--config.epochs=30",
      "--config.eval.test_split=test"
  } <= set(command)
  assert command[-1] == "--flag" and "--workdir=/w" in command


def test_full_table1_command_trains_300_epochs_on_the_config_file():
  command = reproduce.run_command(reproduce.TABLE1[0], 0, "/w",
                                  reproduce.Protocol("1", "full", "validation"), [])
  assert "--config=configs/byol.py" in command and "--config.epochs=300" in command
  assert not any("test_split" in arg or "max_steps" in arg for arg in command)


def test_table1_has_the_papers_22_cells_and_each_is_a_valid_config():
  assert len(reproduce.TABLE1) == 22 and len({v.name for v in reproduce.TABLE1}) == 22
  assert sum(v.config == "simclr" for v in reproduce.TABLE1) == 7
  for table, variants in reproduce.TABLES.items():
    for variant in variants:
      config = reproduce._expected_config(variant, 0, reproduce.Protocol(table, "cpu", "test"))
      config_lib.validate(config_dict.ConfigDict(config))


def test_finished_runs_are_skipped_and_unfinished_ones_run(tmp_path, monkeypatch):
  root = epath.Path(tmp_path)
  _fake_run(tmp_path / "bn" / "seed0", 0.5, 0.4)
  called = []
  monkeypatch.setattr(reproduce.subprocess, "call", lambda cmd, cwd: called.append(cmd) or 0)
  reproduce.run_all(reproduce.TABLE2[:1], [0, 1], root, VALIDATION, [])
  assert len(called) == 1 and f"--workdir={root / 'bn' / 'seed1'}" in called[0]


def test_a_failed_run_stops_with_its_name(tmp_path, monkeypatch):
  monkeypatch.setattr(reproduce.subprocess, "call", lambda cmd, cwd: 143)
  with pytest.raises(SystemExit, match="bn seed 0 exited with 143"):
    reproduce.run_all(reproduce.TABLE2[:1], [0], epath.Path(tmp_path), VALIDATION, [])
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


def _check(workdir, variant, extra_flags=()):
  saved = json.loads((workdir / "config.json").read_text())
  reproduce.check_config(saved, str(workdir), variant, 0, VALIDATION, list(extra_flags))


def test_a_run_of_another_protocol_is_refused_by_name(tmp_path):
  _fake_run(tmp_path / "bn" / "seed0", 0.5, 0.4, protocol=reproduce.Protocol("2", "cpu", "test"))
  with pytest.raises(SystemExit, match="eval.test_split: 'test' there, 'validation' here"):
    _check(tmp_path / "bn" / "seed0", reproduce.TABLE2[0])
  _fake_run(tmp_path / "gn" / "seed0", 0.5, 0.4, variant=reproduce.TABLE2[3])
  with pytest.raises(SystemExit, match="norm: 'gn' there, 'bn' here"):
    _check(tmp_path / "gn" / "seed0", reproduce.TABLE2[0])
  # A key the extra flags set is the user's to vary.
  _check(tmp_path / "gn" / "seed0", reproduce.TABLE2[0], [
      "--config.norm=gn", "--config.weight_standardization=true", "--config.base_lr=2.0",
      "--config.weight_decay=3e-8", "--config.tau_base=0.999", "--config.zero_init_last_norm=true"
  ])


def _records(linear, knn, cosines=(0.9, 0.2), random_init=(0.2, 0.2)):
  return [{
      "linear_top1": a, "knn_top1": b, "positive_cosine": cosines[0], "negative_cosine": cosines[1],
      "random_init_linear_top1": random_init[0], "random_init_knn_top1": random_init[1]
  } for a, b in zip(linear, knn)]


def test_verdicts_follow_the_design_definitions():
  floor = (0.3, 0.3)
  assert reproduce.verdict(_records([0.5, 0.52, 0.51], [0.4, 0.41, 0.42]), floor) == "learns"
  # Above its own random init but not clear of the floor on kNN.
  assert reproduce.verdict(_records([0.5, 0.52, 0.51], [0.2, 0.5, 0.3]), floor) == "unclear"
  assert reproduce.verdict(_records([0.5], [0.4]), floor) == "unclear"  # One seed: no interval.
  assert reproduce.verdict(_records([0.5, 0.5], [0.4, 0.4], cosines=(0.995, 0.991)),
                           floor) == "collapses"
  assert reproduce.verdict(_records([0.15, 0.2], [0.4, 0.4]), floor) == "collapses"
  assert reproduce.agrees(74.3, "learns") == "yes" and reproduce.agrees(74.3, "unclear") == "no"
  assert reproduce.agrees(5.4, "collapses") == "yes" and reproduce.agrees(0.1, "learns") == "no"
  assert reproduce.agrees(None, "learns") == "–"


def test_report_gives_intervals_verdicts_and_the_paper_beside_each_row(tmp_path, monkeypatch):
  monkeypatch.setattr(reproduce, "RESULTS", tmp_path)
  for seed, top1 in enumerate((0.50, 0.52)):
    _fake_run(tmp_path / "runs" / "bn" / f"seed{seed}", top1, 0.40, seed=seed)
  _fake_run(tmp_path / "runs" / "none" / "seed0", 0.1, 0.1, variant=reproduce.TABLE2[1],
            cosines=(1.0, 1.0))
  table = reproduce.report(reproduce.TABLE2, [0, 1], epath.Path(tmp_path / "runs"), VALIDATION,
                           "python -m experiments.reproduction.reproduce --table=2")
  bn = next(line for line in table.splitlines() if line.startswith("| bn "))
  # 2 seeds: t(0.975, 1) = 12.71 times the standard error 1.0; 38.3 and 40 clear the floor 10.
  assert bn.startswith("| bn | 74.3 | learns | yes | 2 | 51.0 ± 12.7 | 40.0 ± 0.0 | 10.0 ± 0.0 |")
  assert "| none | 0.1 | collapses | yes | 1 |" in table
  assert "bn_stats" not in table and "gn_ws" not in table  # Unfinished variants are left out.
  assert (tmp_path / "table2_cpu_validation.md").exists()
  assert (tmp_path / "table2_cpu_validation_cosine.png").exists()
  written = json.loads((tmp_path / "table2_cpu_validation.json").read_text())
  assert [(r["variant"], r["seed"], r["linear_top1"]) for r in written["runs"]] == [("bn", 0, 0.50),
                                                                                    ("bn", 1, 0.52),
                                                                                    ("none", 0, 0.1)
                                                                                   ]
  assert written["rows"][0]["verdict"] == "learns" and written["runs"][0]["cpu"] == "Test CPU"
  assert "Wall time of all 3 runs: 3.0 min" in table


def _report(root, seeds=(0, 1)):
  return reproduce.report(reproduce.TABLE2, list(seeds), epath.Path(root), VALIDATION, "command")


def test_runs_whose_workdirs_are_gone_keep_their_place_through_the_json(tmp_path, monkeypatch):
  monkeypatch.setattr(reproduce, "RESULTS", tmp_path)
  _fake_run(tmp_path / "machine_a" / "bn" / "seed0", 0.50, 0.40)
  _report(tmp_path / "machine_a")
  # Another machine: seed 0's workdir is not there, seed 1's is.
  _fake_run(tmp_path / "machine_b" / "bn" / "seed1", 0.52, 0.40, seed=1)
  table = _report(tmp_path / "machine_b")
  assert "| bn | 74.3 | learns | yes | 2 | 51.0 ± 12.7 |" in table
  written = json.loads((tmp_path / "table2_cpu_validation.json").read_text())
  assert [(r["seed"], r["curve"]["step"]) for r in written["runs"]] == [(0, [10, 20]), (1, [10,
                                                                                            20])]
  # A workdir wins over the record of the same run.
  _fake_run(tmp_path / "machine_c" / "bn" / "seed0", 0.30, 0.40)
  assert "| 2 | 41.0 ±" in _report(tmp_path / "machine_c")


def test_a_kept_record_of_another_protocol_is_refused_by_name(tmp_path, monkeypatch):
  monkeypatch.setattr(reproduce, "RESULTS", tmp_path)
  _fake_run(tmp_path / "runs" / "bn" / "seed0", 0.50, 0.40)
  _report(tmp_path / "runs")
  path = tmp_path / "table2_cpu_validation.json"
  written = json.loads(path.read_text())
  written["runs"][0]["run_config"]["image_size"] = 32
  path.write_text(json.dumps(written))
  with pytest.raises(
      SystemExit, match="record of bn seed 0 in table2_cpu_validation.json .*"
      "image_size: 32 there, 36 here"):
    _report(tmp_path / "elsewhere")
