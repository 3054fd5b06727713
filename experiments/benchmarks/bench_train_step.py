r"""BYOL train-step throughput against XLA's FLOP count, the machine's matmul peak and PyTorch.

    pip install -e .[bench]       # PyTorch, for the side-by-side step only
    python -m experiments.benchmarks.bench_train_step  # the full table (~30 min on 2 cores)
    python -m experiments.benchmarks.bench_train_step --quick  # end-to-end check, 32 and 224 px

Rows: ResNet-18 at --r18_sizes with the cifar and imagenet stems and ResNet-50 at --r50_sizes with
the imagenet stem, each with BN and with GN+WS, width 1 and the paper's heads (4096-256-4096). Ours
is the real step of byol_jax.train (make_update, LARS, EMA target, online probe), compiled for 1
CPU device as map_over_devices compiles it (with byol_jax.cpu_speed), and also timed with
XLA's default options (which hand the convolutions to YNNPACK). Its inputs are two pre-made uint8
views and the config's augmentation probabilities are 0, which removes the augmentations from the
step (it still converts and normalizes the views). The PyTorch step (eager, NCHW) is the same
computation written here: the same ResNet v1, norms (GN 16 groups; WS eps 1e-4 per output unit
over its fan-in), heads, probe, symmetric BYOL loss and EMA target, fed the same views already
normalized; it uses SGD with momentum and weight decay instead of LARS (LARS adds a few norms per
layer: far under 1% of the step). Both compute in float32. Each framework and row runs in a
fresh subprocess, so thread pools and the peak resident set size (ru_maxrss, which includes the
framework's own ~hundreds of MiB) are its own. PyTorch's OpenMP threads sleep when idle
(OMP_WAIT_POLICY=PASSIVE unless set): by default they spin, which on a machine with any other
load made its steps up to 4x slower.

Also: XLA's FLOP count of the compiled step (cost_analysis) and achieved FLOP/s as a fraction of
the best f32 jnp.dot of two --matmul_size square matrices, measured in the same run; the cost of
weight standardization (GN+WS against GN alone) and of on-device augmentation (the config's
augmentations against none) as a fraction of the step with them, for the GN+WS rows in
--ablate. All variants of a row are timed interleaved in one process (one step of each per
round), as separate runs differ by more than these costs. The cifar-stem rows keep the
pixels per batch of 32 px (batch r18_batch * (32/px)^2, at least 8), as their FLOPs grow with
the square of the size.

Prints a Markdown table and writes it to experiments/results/train_step.md (--quick:
train_step_quick.md; --output to change).
"""
import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

import experiments
from experiments import machine

ROOT = experiments.REPO

_NUM_CLASSES = 10
_BYOL_CONFIG = str(ROOT / "configs" / "byol.py")
_NO_AUGMENTATION = ("color_jitter_prob", "grayscale_prob", "blur_prob", "solarize_prob")


def _rss_mib():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux.


def _views(batch, size):
  """The same two pre-made uint8 views for every framework and variant of a row."""
  rng = np.random.default_rng(0)
  return [rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8) for _ in range(2)]


def _time_steps(step, warmup, steps):
  """Median seconds of `steps` calls of step() after `warmup` calls; step() must block."""
  return _time_interleaved({"s": step}, warmup, steps)["s"]


def _time_interleaved(steps_by_name, warmup, rounds):
  """Median seconds of each blocking step(), after `warmup` calls of each; round-robin order."""
  for step in steps_by_name.values():
    for _ in range(warmup):
      step()
  times = {name: [] for name in steps_by_name}
  for _ in range(rounds):
    for name, step in steps_by_name.items():
      start = time.perf_counter()
      step()
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(ts) for name, ts in times.items()}


def _matmul_peak(spec):
  """Best FLOP/s of an f32 n x n matmul, jnp.dot or torch.mm."""
  n, repeats = spec["n"], spec["repeats"]
  a, b = (np.random.default_rng(i).standard_normal((n, n), dtype=np.float32) for i in (0, 1))
  if spec["framework"] == "jax":
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    dot = jax.jit(jnp.dot)
    a, b = jax.device_put(a), jax.device_put(b)
    run = lambda: dot(a, b).block_until_ready()
  else:
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    a, b = torch.from_numpy(a), torch.from_numpy(b)
    run = lambda: torch.mm(a, b)
  run()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    best = min(best, time.perf_counter() - start)
  return {"flops_per_s": 2 * n**3 / best}


def _jax_config(row, *, weight_standardization, augment):
  from byol_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  c = config_lib.from_file(_BYOL_CONFIG)
  c.depth, c.stem, c.width = row["depth"], row["stem"], 1.0
  c.norm = "gn" if row["norm"] == "gn_ws" else "bn"
  c.weight_standardization = weight_standardization
  c.image_size, c.batch_size = row["size"], row["batch"]
  if "compute_dtype" in c:  # float32 like PyTorch and the matmul peak, whatever the default.
    c.compute_dtype = "float32"
  if not augment:
    for view in ("view1", "view2"):
      for key in _NO_AUGMENTATION:
        c[view][key] = 0.0
  return config_lib.validate(c)


def _jax_variant(row, views, *, xla_defaults=False, **variant):
  """The compiled real train step of one variant, its XLA FLOPs and online parameter count.

  Compiled as map_over_devices compiles it on CPU (with cpu_speed's options), or with
  XLA's default options if xla_defaults; ahead of time here, for its FLOP count.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from byol_jax import cpu_speed  # pylint: disable=g-import-not-at-top
  from byol_jax import model  # pylint: disable=g-import-not-at-top
  from byol_jax import train  # pylint: disable=g-import-not-at-top

  config = _jax_config(row, **variant)
  size, batch = row["size"], row["batch"]
  state = train.replicate(
      train.init_state(config, jax.random.PRNGKey(0), image_shape=(size, size, 3),
                       num_classes=_NUM_CLASSES, steps_per_epoch=100))
  inputs = train.replicate({
      "view1": views[0], "view2": views[1], "label": np.zeros(batch, np.int32),
      "index": np.arange(batch, dtype=np.int32)
  })
  update = jax.pmap(train.make_update(config, num_classes=_NUM_CLASSES, steps_per_epoch=100),
                    axis_name=model.AXIS, donate_argnums=(0,))
  options = None if xla_defaults else cpu_speed.for_platform("cpu") or None
  start = time.perf_counter()
  compiled = update.lower(state, inputs).compile(compiler_options=options)
  compile_s = time.perf_counter() - start
  params = sum(x.size for x in jax.tree.leaves(state.online_params)) // len(jax.local_devices())

  def step():
    nonlocal state
    state, metrics = compiled(state, inputs)
    jax.block_until_ready((state, metrics))

  return {
      "step": step, "compile_s": compile_s, "flops": machine.xla_flops(compiled), "params": params
  }


def _jax_row(spec):
  """The row's step (augment-free, as configured), it with XLA's default options, the ablations.

  The ablations' costs are differences of a few percent, under the noise between runs on a
  shared machine (the same step varied by 15% between two runs of 9 steps). So the variants are
  timed interleaved, one step of each per round, and each gets the median over the rounds.
  """
  row = spec["row"]
  views = _views(row["batch"], row["size"])
  variants = {
      "step_s":
          _jax_variant(row, views, weight_standardization=row["norm"] == "gn_ws", augment=False)
  }
  variants["step_s"]["step"]()  # The peak RSS includes a step's buffers, as PyTorch's does...
  rss_mib = _rss_mib()  # ...but not the other variants' compilations.
  variants["xla_defaults_step_s"] = _jax_variant(row, views,
                                                 weight_standardization=row["norm"] == "gn_ws",
                                                 augment=False, xla_defaults=True)
  if spec["ablate"]:
    variants["no_ws_step_s"] = _jax_variant(row, views, weight_standardization=False, augment=False)
    variants["augment_step_s"] = _jax_variant(row, views, weight_standardization=True, augment=True)
  steps = {name: variant["step"] for name, variant in variants.items()}
  main = variants["step_s"]
  return {
      **_time_interleaved(steps, spec["warmup"], spec["steps"]), "rss_mib": rss_mib,
      "compile_s": main["compile_s"], "flops": main["flops"], "params": main["params"]
  }


def _torch_networks(row, config):
  """The online network, layer for layer byol_jax.nets' ResNet v1 and MLP heads, NCHW."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

  ws = row["norm"] == "gn_ws"

  def standardize(w):
    var, mean = torch.var_mean(w, dim=tuple(range(1, w.dim())), correction=0, keepdim=True)
    return (w - mean) * torch.rsqrt(var + 1e-4)

  class Conv(nn.Conv2d):

    def forward(self, x):  # pylint: disable=arguments-renamed
      return self._conv_forward(x, standardize(self.weight) if ws else self.weight, None)

  class Linear(nn.Linear):

    def forward(self, x):  # pylint: disable=arguments-renamed
      return F.linear(x, standardize(self.weight) if ws else self.weight, self.bias)

  def conv(cin, cout, kernel, stride):
    # Symmetric padding gives the same output sizes as Haiku's SAME.
    return Conv(cin, cout, kernel, stride, padding=kernel // 2, bias=False)

  def norm(channels, batch_norm):
    if ws:
      return nn.GroupNorm(config.gn_groups, channels, eps=1e-5)
    return batch_norm(channels, eps=1e-5, momentum=0.1)  # Haiku's decay 0.9.

  class Block(nn.Module):

    def __init__(self, cin, channels, stride, bottleneck):
      super().__init__()
      specs = (((channels, 1, 1), (channels, 3, stride), (4 * channels, 1, 1)) if bottleneck else
               ((channels, 3, stride), (channels, 3, 1)))
      layers, c = [], cin
      for cout, kernel, s in specs:
        layers += [conv(c, cout, kernel, s), norm(cout, nn.BatchNorm2d), nn.ReLU(inplace=True)]
        c = cout
      self.main = nn.Sequential(*layers[:-1])
      self.shortcut = nn.Identity()
      if stride != 1 or cin != c:
        self.shortcut = nn.Sequential(conv(cin, c, 1, stride), norm(c, nn.BatchNorm2d))

    def forward(self, x):
      return F.relu(self.main(x) + self.shortcut(x))

  kernel, stride = (7, 2) if row["stem"] == "imagenet" else (3, 1)
  layers = [conv(3, 64, kernel, stride), norm(64, nn.BatchNorm2d), nn.ReLU(inplace=True)]
  if row["stem"] == "imagenet":
    layers.append(nn.MaxPool2d(3, 2, padding=1))
  bottleneck, blocks = {18: (False, (2, 2, 2, 2)), 50: (True, (3, 4, 6, 3))}[row["depth"]]
  cin = 64
  for s, (channels, num_blocks) in enumerate(zip((64, 128, 256, 512), blocks)):
    for b in range(num_blocks):
      layers.append(Block(cin, channels, 2 if s and not b else 1, bottleneck))
      cin = channels * (4 if bottleneck else 1)
  layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]

  def mlp(cin, hidden, out):
    return nn.Sequential(Linear(cin, hidden), norm(hidden, nn.BatchNorm1d), nn.ReLU(inplace=True),
                         Linear(hidden, out, bias=False))

  return nn.ModuleDict(
      dict(
          encoder=nn.Sequential(*layers), projector=mlp(cin, config.projector_hidden_size,
                                                        config.projection_size),
          predictor=mlp(config.projection_size, config.predictor_hidden_size,
                        config.projection_size)))


def _torch_row(spec):
  """The PyTorch BYOL step of a row: median step seconds, peak RSS, online parameter count."""
  import copy  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  from byol_jax import config as config_lib  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(len(os.sched_getaffinity(0)))
  torch.set_flush_denormal(True)  # As XLA:CPU does.
  row = spec["row"]
  config = config_lib.from_file(_BYOL_CONFIG)
  online = _torch_networks(row, config)
  target = copy.deepcopy(online).requires_grad_(False)
  probe = torch.nn.Linear(online["projector"][0].in_features, _NUM_CLASSES)
  optimizer = torch.optim.SGD(online.parameters(), lr=1e-3, momentum=config.momentum,
                              weight_decay=config.weight_decay)
  probe_optimizer = torch.optim.Adam(probe.parameters(), lr=config.probe_lr)
  online_params, target_params = list(online.parameters()), list(target.parameters())
  mean = np.asarray([0.485, 0.456, 0.406], np.float32)
  std = np.asarray([0.229, 0.224, 0.225], np.float32)
  views = [
      torch.from_numpy(((v / np.float32(255) - mean) / std).transpose(0, 3, 1, 2).copy())
      for v in _views(row["batch"], row["size"])
  ]
  labels = torch.zeros(2 * row["batch"], dtype=torch.long)

  def forward(net, x):
    embedding = net["encoder"](x)
    projection = net["projector"](embedding)
    return embedding, projection, net["predictor"](projection)

  def regression(prediction, projection):
    return 2 - 2 * F.cosine_similarity(prediction, projection, dim=-1)

  def step():
    with torch.no_grad():
      targets = [forward(target, v)[1] for v in views]
    outputs = [forward(online, v) for v in views]
    loss = torch.mean(regression(outputs[0][2], targets[1]) + regression(outputs[1][2], targets[0]))
    logits = probe(torch.cat([outputs[0][0], outputs[1][0]]).detach())
    loss = loss + F.cross_entropy(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    probe_optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    probe_optimizer.step()
    with torch.no_grad():  # xi <- tau xi + (1 - tau) theta.
      for target_param, online_param in zip(target_params, online_params):
        target_param.lerp_(online_param, 1 - config.tau_base)

  step_s = _time_steps(step, spec["warmup"], spec["steps"])
  return {"step_s": step_s, "rss_mib": _rss_mib(), "params": sum(p.numel() for p in online_params)}


_CHILDREN = {"matmul": _matmul_peak, "jax": _jax_row, "torch": _torch_row}


def _child(spec):
  """Runs spec in a fresh interpreter; its result, or None after printing why it failed."""
  env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([
      sys.executable, "-m", "experiments.benchmarks.bench_train_step", f"--child={json.dumps(spec)}"
  ], env=env, cwd=ROOT, capture_output=True, text=True, check=False)
  if proc.returncode:
    print(f"FAILED {spec}:\n{proc.stderr[-3000:]}", file=sys.stderr)
    return None
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _rows(args):
  rows = []
  for size in args.r18_sizes:
    for stem in ("cifar", "imagenet"):
      batch = args.r18_batch
      if stem == "cifar":
        batch = max(min(batch, 8), round(batch * (32 / size)**2))
      rows.append(dict(depth=18, stem=stem, size=size, batch=batch))
  rows += [
      dict(depth=50, stem="imagenet", size=size, batch=args.r50_batch) for size in args.r50_sizes
  ]
  return [
      dict(r, norm=norm, name=f"r{r['depth']}-{r['stem']}-{r['size']}")
      for r in rows
      for norm in ("bn", "gn_ws")
  ]


def _compile_options_note():
  """What byol_jax.cpu_speed passes on this machine's jaxlib, in words."""
  from byol_jax import cpu_speed  # pylint: disable=g-import-not-at-top
  options = cpu_speed.for_platform("cpu")
  return f"ours: {options}" if options else "none on this jaxlib: both columns are the same step"


def _percent(part, whole):
  return f"{100 * part / whole:.0f}%"


def _table_row(row, ours, theirs, peak):
  cells = [
      f"ResNet-{row['depth']}", row["stem"],
      str(row["size"]), "GN+WS" if row["norm"] == "gn_ws" else "BN",
      str(row["batch"])
  ]
  if ours and theirs:
    same = ours["params"] == theirs["params"]
    cells.append(f"{ours['params']:,}"
                 if same else f"ours {ours['params']:,} != PyTorch {theirs['params']:,}")
  else:
    cells.append(f"{(ours or theirs)['params']:,}" if ours or theirs else "-")
  if ours:
    achieved = ours["flops"] / ours["step_s"]
    cells += [
        f"{ours['flops'] / 1e9:.0f}", f"{row['batch'] / ours['step_s']:.1f}",
        f"{achieved / 1e9:.0f} ({_percent(achieved, peak)})" if peak else f"{achieved / 1e9:.0f}",
        f"{row['batch'] / ours['xla_defaults_step_s']:.1f}"
    ]
  else:
    cells += ["failed"] * 4
  cells.append(f"{row['batch'] / theirs['step_s']:.1f}" if theirs else "failed")
  cells.append(f"{theirs['step_s'] / ours['step_s']:.2f}x" if ours and theirs else "-")
  cells.append(" / ".join(f"{r['rss_mib']:.0f}" if r else "-" for r in (ours, theirs)))
  no_ws, augmented = (ours or {}).get("no_ws_step_s"), (ours or {}).get("augment_step_s")
  cells.append(_percent(ours["step_s"] - no_ws, ours["step_s"]) if no_ws else "-")
  cells.append(_percent(augmented - ours["step_s"], augmented) if augmented else "-")
  return "| " + " | ".join(cells) + " |"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ints = lambda s: [int(x) for x in s.split(",") if x]
  parser.add_argument("--r18_sizes", type=ints, default=[32, 64, 96],
                      help="ResNet-18 image sizes (px); empty for none")
  parser.add_argument("--r50_sizes", type=ints, default=[224],
                      help="ResNet-50 image sizes (px); empty for none")
  parser.add_argument("--r18_batch", type=int, default=64,
                      help="ResNet-18 batch (cifar stem: scaled by (32/px)^2, at least 8)")
  parser.add_argument("--r50_batch", type=int, default=16)
  parser.add_argument("--warmup", type=int, default=1, help="untimed steps after compiling")
  parser.add_argument("--steps", type=int, default=5,
                      help="timed steps per row and variant (median)")
  parser.add_argument("--matmul_size", type=int, default=4096)
  parser.add_argument("--matmul_repeats", type=int, default=5, help="best of this many")
  parser.add_argument(
      "--ablate", default="r18-cifar-32,r18-imagenet-32,r50-imagenet-224",
      help="rows (model-stem-px, or 'all') whose GN+WS step is also timed "
      "without WS and with augmentation")
  parser.add_argument(
      "--quick", action="store_true",
      help="end-to-end check: 32 px ResNet-18, batch 4 (R18) and 2 (R50), 1 timed "
      "step, 1024^2 matmul (flags given still win); the numbers mean little")
  parser.add_argument("--output", default=None)
  parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.quick:
    parser.set_defaults(r18_sizes=[32], r18_batch=4, r50_batch=2, steps=1, matmul_size=1024,
                        matmul_repeats=2)
    args = parser.parse_args()
  if args.child:
    spec = json.loads(args.child)
    print(json.dumps(_CHILDREN[spec["kind"]](spec)))
    return
  output = pathlib.Path(args.output or experiments.RESULTS /
                        ("train_step_quick.md" if args.quick else "train_step.md"))
  cores = len(os.sched_getaffinity(0))
  load = os.getloadavg()[0]
  start = time.perf_counter()

  matmul = {}
  for framework in ("jax", "torch"):
    result = _child(
        dict(kind="matmul", framework=framework, n=args.matmul_size, repeats=args.matmul_repeats))
    matmul[framework] = result and result["flops_per_s"]
    print(
        f"{framework} f32 matmul {args.matmul_size}^2: "
        f"{(matmul[framework] or 0) / 1e9:.0f} GFLOP/s", file=sys.stderr)
  peak = matmul["jax"]

  lines = []
  for row in _rows(args):
    spec = dict(row=row, warmup=args.warmup, steps=args.steps)
    ablate = row["norm"] == "gn_ws" and (args.ablate == "all" or
                                         row["name"] in args.ablate.split(","))
    ours = _child(dict(spec, kind="jax", ablate=ablate))
    theirs = _child(dict(spec, kind="torch"))
    print(f"{row['name']} {row['norm']} batch {row['batch']}: ours {ours}, PyTorch {theirs}",
          file=sys.stderr)
    lines.append(_table_row(row, ours, theirs, peak))

  command = " ".join(["python -m experiments.benchmarks.bench_train_step"] + sys.argv[1:])
  torch_peak = f"{matmul['torch'] / 1e9:.0f}" if matmul["torch"] else "failed"
  text = "\n".join([
      f"BYOL train step, ours (byol_jax.train on 1 XLA:CPU device, "
      f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}) against PyTorch (eager), on "
      f"{machine.cpu_name()}, {cores} cores, 1-min load average {load:.1f} before the run "
      f"(other work on the cores distorts the timings, PyTorch's more). Images/s are "
      f"batch / median of {args.steps} steps after compiling and {args.warmup} warm-up step(s), "
      f"on two pre-made views without augmentation.", "",
      "| model | stem | px | norm | batch | online params (ours, = PyTorch) | XLA GFLOP/step | "
      "ours img/s | ours GFLOP/s (% of matmul peak) | ours, XLA's default options, img/s | "
      "PyTorch img/s | ours/PyTorch | peak RSS MiB ours / PyTorch | WS cost | "
      "augmentation cost |",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
      *lines, "",
      f"- Matmul peak: best f32 `jnp.dot` of two {args.matmul_size}x{args.matmul_size} matrices "
      f"over {args.matmul_repeats} runs, {(peak or 0) / 1e9:.0f} GFLOP/s (`torch.mm`: "
      f"{torch_peak} GFLOP/s). XLA counts a multiply-add as 2 FLOPs.",
      f"- Threads: XLA:CPU's default intra-op pool (one thread per core); "
      f"`torch.set_num_threads({cores})`, OMP_WAIT_POLICY="
      f"{os.environ.get('OMP_WAIT_POLICY', 'PASSIVE')}, denormals flushed as XLA does.",
      "- PyTorch uses SGD with momentum in place of LARS; otherwise the same step (see the "
      "script's docstring). Ours converts and normalizes the uint8 views in the step; PyTorch "
      "gets them normalized.",
      "- XLA's default options: the same step compiled without byol_jax.cpu_speed "
      f"({_compile_options_note()}), timed interleaved with ours.",
      "- Peak RSS: ru_maxrss of the row's fresh process, framework and interpreter included "
      "(ours: XLA's compilation too; taken before the other variants compile).",
      "- WS cost: (GN+WS step - GN step) / GN+WS step. Augmentation cost: (step with the "
      "config's on-device augmentation - step without) / step with. All variants of a row "
      "are timed interleaved, one step of each per round. '-': not measured (GN+WS rows "
      "in --ablate only).", f"- Whole run: {(time.perf_counter() - start) / 60:.1f} min.", "",
      f"Command: `{command}`"
  ]) + "\n"
  print(text)
  output.parent.mkdir(parents=True, exist_ok=True)
  output.write_text(text)
  print(f"Written to {output}")


if __name__ == "__main__":
  main()
