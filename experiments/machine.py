"""What the benchmarks share: the machine they ran on, and XLA's FLOP count of a program."""
import platform


def cpu_name():
  """The CPU model from /proc/cpuinfo, or what `platform` knows where there is none."""
  try:
    with open("/proc/cpuinfo") as f:
      return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    return platform.processor() or platform.machine()


def xla_flops(compiled):
  """The FLOPs of one run of a compiled program, by XLA's cost analysis (one device's)."""
  cost = compiled.cost_analysis()
  return (cost[0] if isinstance(cost, list) else cost)["flops"]
