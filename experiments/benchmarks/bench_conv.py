r"""Where the CPU train step's time goes: its convolutions, one layer at a time, XLA vs PyTorch.

    pip install -e .[bench]
    python -m experiments.benchmarks.bench_conv                       # ~2 min on 2 cores
    XLA_FLAGS=--xla_cpu_use_onednn=true python -m experiments.benchmarks.bench_conv \
        --output=/tmp/conv.md

The train step of bench_train_step.py is almost all convolution, and it trails PyTorch where the
feature maps are large. This splits one conv layer of each stage of its rows into the three
convolutions of a training step: the forward pass, the input gradient (dx) and the kernel
gradient (dw), each jitted alone, as `byol_jax.cpu_speed.conv2d` computes them (the path it
takes is in the table: XLA's convolution, or a matmul for 1x1 kernels and tiny outputs), with
the cores the forward pass kept busy (CPU time over wall time), compiled with the options the
train step gets (byol_jax.cpu_speed: XLA's own Eigen convolutions). With XLA's default
options, float32 convolutions go to YNNPACK, which here ran on one core whenever a layer had
fewer than 128 input or output channels; the same three are also timed that way. Beside them:
the layer as patches plus one matmul (im2col, `matmul_conv2d`), forward and both gradients, and
PyTorch's forward and forward+backward (input and kernel gradients) of the same layer in NCHW.

Prints a Markdown table and writes it to experiments/results/conv.md (--output to change). The
XLA_FLAGS in force are named in the table's header, so runs with XLA's library flags compare.
"""
import argparse
import os
import pathlib
import statistics
import sys
import time

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # Idle PyTorch threads must not spin.

from byol_jax import cpu_speed
import experiments
from experiments import machine

# (model row of bench_train_step, batch, input px, in channels, out channels, kernel, stride).
LAYERS = (
    ("R18 cifar 32", 64, 32, 64, 64, 3, 1),
    ("R18 cifar 32", 64, 16, 128, 128, 3, 1),
    ("R18 cifar 32", 64, 8, 256, 256, 3, 1),
    ("R18 cifar 32", 64, 4, 512, 512, 3, 1),
    ("R18 imagenet 96", 64, 24, 64, 64, 3, 1),
    ("R18 imagenet 96", 64, 12, 128, 128, 3, 1),
    ("R18 imagenet 96", 64, 6, 256, 256, 3, 1),
    ("R18 imagenet 96", 64, 3, 512, 512, 3, 1),
    ("R50 imagenet 224", 16, 224, 3, 64, 7, 2),
    ("R50 imagenet 224", 16, 56, 64, 64, 3, 1),
    ("R50 imagenet 224", 16, 56, 64, 256, 1, 1),
    ("R50 imagenet 224", 16, 28, 128, 128, 3, 1),
    ("R50 imagenet 224", 16, 14, 256, 256, 3, 1),
    ("R50 imagenet 224", 16, 7, 512, 512, 3, 1),
)


def _median_ms(fn, repeats):
  """Median milliseconds of a blocking fn() over `repeats` calls, after two warm-up calls."""
  return _timed(fn, repeats)[0]


def _timed(fn, repeats):
  """(median milliseconds, process CPU time over wall time) of `repeats` calls of fn()."""
  fn()
  fn()
  times = []
  cpu_start, wall_start = time.process_time(), time.perf_counter()
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  busy = (time.process_time() - cpu_start) / (time.perf_counter() - wall_start)
  return 1e3 * statistics.median(times), busy


def _jax_times(batch, px, cin, cout, kernel, stride, repeats):
  """(conv2d's path, ([fwd, dx, dw] ms, fwd cores busy), the same with XLA's defaults, im2col).

  The im2col entry is its fwd + dx + dw.
  """
  import jax  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  x = jax.numpy.asarray(rng.standard_normal((batch, px, px, cin), np.float32))
  w = jax.numpy.asarray(rng.standard_normal((kernel, kernel, cin, cout), np.float32) * 0.05)

  def timed(conv_fn, compiler_options=None):
    out = conv_fn(x, w, stride)
    g = jax.numpy.asarray(rng.standard_normal(out.shape, np.float32))
    jit = lambda f: jax.jit(f, compiler_options=compiler_options)
    forward = jit(lambda x, w: conv_fn(x, w, stride))
    dx = jit(lambda x, w, g: jax.vjp(lambda x: conv_fn(x, w, stride), x)[1](g)[0])
    dw = jit(lambda x, w, g: jax.vjp(lambda w: conv_fn(x, w, stride), w)[1](g)[0])
    results = [
        _timed(lambda f=f, a=a: jax.block_until_ready(f(*a)), repeats)
        for f, a in ((forward, (x, w)), (dx, (x, w, g)), (dw, (x, w, g)))
    ]
    return [ms for ms, _ in results], results[0][1]

  path = "matmul" if cpu_speed.use_matmul(x.shape, w.shape, stride) else "XLA conv"
  ours = cpu_speed.for_platform("cpu") or None
  return (path, timed(cpu_speed.conv2d,
                      ours), timed(cpu_speed.conv2d), sum(timed(cpu_speed.matmul_conv2d, ours)[0]))


def _torch_times(batch, px, cin, cout, kernel, stride, repeats, *, threads):
  """PyTorch's forward, and forward + backward to the input and the kernel, NCHW."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(threads)
  torch.set_flush_denormal(True)  # As XLA:CPU does.
  x = torch.randn(batch, cin, px, px, requires_grad=True)
  w = torch.randn(cout, cin, kernel, kernel, requires_grad=True)

  def forward():
    with torch.no_grad():
      F.conv2d(x, w, stride=stride, padding=kernel // 2)

  def forward_backward():
    y = F.conv2d(x, w, stride=stride, padding=kernel // 2)
    x.grad = w.grad = None
    y.backward(torch.ones_like(y))

  return _median_ms(forward, repeats), _median_ms(forward_backward, repeats)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--repeats", type=int, default=9, help="timed calls per cell (median)")
  parser.add_argument("--output", default=str(experiments.RESULTS / "conv.md"))
  args = parser.parse_args()
  cores = len(os.sched_getaffinity(0))
  start = time.perf_counter()
  lines = []
  for model, batch, px, cin, cout, kernel, stride in LAYERS:
    shape = (batch, px, cin, cout, kernel, stride)
    path, ((forward, dx, dw), busy), (default,
                                      default_busy), im2col = _jax_times(*shape, args.repeats)
    torch_forward, torch_total = _torch_times(*shape, args.repeats, threads=cores)
    gflop = 2 * batch * (-(-px // stride))**2 * kernel * kernel * cin * cout / 1e9
    ours = forward + dx + dw
    lines.append(
        f"| {model} | {batch} | {px} | {cin}->{cout} | {kernel}x{kernel}/{stride} | {path} | "
        f"{gflop:.2f} | {forward:.1f} ({1e3 * gflop / forward:.0f}, {busy:.1f}) | {dx:.1f} | "
        f"{dw:.1f} | {ours:.1f} | {sum(default):.1f} ({default_busy:.1f}) | {im2col:.1f} | "
        f"{torch_forward:.1f} ({1e3 * gflop / torch_forward:.0f}) | {torch_total:.1f} | "
        f"{torch_total / ours:.2f}x |")
    print(lines[-1], file=sys.stderr)

  flags = os.environ.get("XLA_FLAGS", "")
  text = "\n".join([
      f"One conv layer's forward and gradients, ours (jitted, 1 XLA:CPU device, float32, "
      f"XLA_FLAGS={flags!r}) against PyTorch (eager, NCHW, {cores} threads), on "
      f"{machine.cpu_name()}, {cores} cores. Milliseconds, median of {args.repeats} calls.", "",
      "| row | batch | px | channels | kernel/stride | conv2d's path | GFLOP fwd | "
      "ours fwd (GFLOP/s, cores busy) | ours dx | ours dw | ours fwd+dx+dw | "
      "the same, XLA's default options (fwd cores busy) | im2col fwd+dx+dw | "
      "PyTorch fwd (GFLOP/s) | PyTorch fwd+bwd | ours/PyTorch |",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- "
      "| --- |", *lines, "",
      "- ours/PyTorch: speed ratio, PyTorch's forward+backward time over ours (fwd + dx + dw); "
      "above 1x ours is faster.",
      "- Cores busy: the process's CPU time over wall time while the forward pass ran; 1.0 is "
      "one core.", f"- Ours: compiled with byol_jax.cpu_speed's options "
      f"({cpu_speed.for_platform('cpu') or 'none on this jaxlib'}); XLA's default "
      f"options hand the convolutions to YNNPACK.",
      f"- Whole run: {(time.perf_counter() - start) / 60:.1f} min.", "",
      f"Command: `{' '.join(['python -m experiments.benchmarks.bench_conv'] + sys.argv[1:])}`"
  ]) + "\n"
  print(text)
  output = pathlib.Path(args.output)
  output.parent.mkdir(parents=True, exist_ok=True)
  output.write_text(text)
  print(f"Written to {output}")


if __name__ == "__main__":
  main()
