"""What the benchmarks report about the machine they ran on."""
import platform


def cpu_name():
  """The CPU model from /proc/cpuinfo, or what `platform` knows where there is none."""
  try:
    with open("/proc/cpuinfo") as f:
      return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    return platform.processor() or platform.machine()
