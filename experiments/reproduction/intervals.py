"""Mean and t-based 95% interval over seeds: how the reproduction reports a number."""
import numpy as np
from scipy import stats


def mean_interval(values, confidence=0.95):
  """(mean, half-width) of the t-based interval of the mean; the half-width is nan for one value."""
  values = np.asarray(values, np.float64)
  if len(values) < 2:
    return float(values.mean()), float("nan")
  quantile = stats.t.ppf((1 + confidence) / 2, len(values) - 1)
  return float(values.mean()), float(quantile * values.std(ddof=1) / np.sqrt(len(values)))


def format_interval(values, scale=100.0):
  """'73.2 ± 1.4' (percent by default), or '73.2' for one value."""
  mean, half = mean_interval(np.asarray(values) * scale)
  return f"{mean:.1f}" if np.isnan(half) else f"{mean:.1f} ± {half:.1f}"
