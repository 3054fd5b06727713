"""The evaluation a run ends with: linear probe and kNN on frozen features, against random init.

With `eval.linear_augment=True` (the paper's protocol) the linear classifier trains on fresh
random-crop + flip views, each embedded by the frozen encoder. With False it trains on the cached
features of the centre-cropped train images: far cheaper, used by the CPU `tiny` presets.
"""
import json

from etils import epath
import numpy as np

from byol_jax import config as config_lib
from byol_jax import export
from byol_jax.data import pipeline
from byol_jax.data import sources
from byol_jax.evaluation import knn
from byol_jax.evaluation import linear


def _cached_batches(features, labels, batch_size, seed):
  """Infinite shuffled batches of cached features, in the dict layout of the image pipelines."""
  rng = np.random.default_rng(seed)
  while True:
    order = rng.permutation(len(features))
    for start in range(0, len(order) - batch_size + 1, batch_size):
      chosen = order[start:start + batch_size]
      yield {"image": features[chosen], "label": labels[chosen], "mask": np.ones(batch_size, bool)}


def _identity(x):
  return x


def evaluate_features(embed_fn, *, dataset, data_dir, image_size, eval_config, seed=0,
                      skip_corrupt=False, max_pixels=None):
  """{'top1', 'top5', 'knn_top1', ...} of one frozen encoder, trained on eval.train_split and
  tested on eval.test_split (the dataset's own by default)."""
  info = sources.dataset_info(dataset, data_dir, skip_corrupt=skip_corrupt, max_pixels=max_pixels)
  e = eval_config

  def batches(split):
    return pipeline.eval_batches(dataset=dataset, data_dir=data_dir, split=split,
                                 batch_size=e.batch_size, image_size=image_size,
                                 crop_fraction=e.crop_fraction, skip_corrupt=skip_corrupt)

  train_split, test_split = e.train_split or info.train_split, e.test_split or info.test_split
  train_x, train_y = linear.extract_features(embed_fn, batches(train_split))
  test_x, test_y = linear.extract_features(embed_fn, batches(test_split))
  results = {
      "knn_top1":
          knn.knn_top1(train_x, train_y, test_x, test_y, k=e.knn_k, temperature=e.knn_temperature,
                       num_classes=info.num_classes)
  }
  batch_size = min(e.linear_batch_size, len(train_x))
  steps_per_epoch = max(len(train_x) // batch_size, 1)
  learning_rate = linear.linear_learning_rate(e.linear_base_lr, batch_size)
  if e.linear_augment:
    train_batches = pipeline.linear_train_batches(dataset=dataset, data_dir=data_dir,
                                                  split=train_split, batch_size=batch_size,
                                                  image_size=image_size, seed=seed,
                                                  skip_corrupt=skip_corrupt)
    linear_results = linear.linear_evaluation(embed_fn, train_batches, lambda: batches(test_split),
                                              num_classes=info.num_classes, epochs=e.linear_epochs,
                                              steps_per_epoch=steps_per_epoch,
                                              learning_rate=learning_rate,
                                              standardize_features=e.standardize_features,
                                              seed=seed)
  else:

    def test_batches():
      for start in range(0, len(test_x), batch_size):
        stop = start + batch_size
        yield {
            "image": test_x[start:stop], "label": test_y[start:stop],
            "mask": np.ones(len(test_x[start:stop]), bool)
        }

    linear_results = linear.linear_evaluation(
        _identity, _cached_batches(train_x, train_y, batch_size, seed), test_batches,
        num_classes=info.num_classes, epochs=e.linear_epochs, steps_per_epoch=steps_per_epoch,
        learning_rate=learning_rate, standardize_features=e.standardize_features, seed=seed)
  results.update(linear_results)
  results["num_train_examples"], results["num_test_examples"] = len(train_x), len(test_x)
  return {k: float(v) for k, v in results.items()}


def check_splits(config, info):
  """Opens each split the run will evaluate on, so that a bad name fails before training."""
  e, m = config.eval, config.knn_monitor
  splits = {}
  if m.every_steps:
    splits.update(
        {"knn_monitor.bank_split": m.bank_split, "knn_monitor.query_split": m.query_split})
  if e.enabled and info.num_classes:
    splits.update({
        "eval.train_split": e.train_split or info.train_split,
        "eval.test_split": e.test_split or info.test_split
    })
  for key, split in splits.items():
    try:
      source = sources.source(config.dataset, config.data_dir, split,
                              skip_corrupt=config.skip_corrupt_images)
    except ValueError as error:  # tfds' unknown split or bad slice; DatasetError is one too.
      folder = config.dataset.startswith(sources.FOLDER_PREFIX)
      example = "'all[:2000]'" if folder else "'train[:10000]'"
      off = (" or turn the monitor off with --config.knn_monitor.every_steps=0"
             if key.startswith("knn_monitor") else "")
      raise config_lib.ConfigError(
          f"config.{key}: split {split!r} of {config.dataset!r} cannot be read ({error}). Fix: "
          f"name an existing split or slice of one (e.g. {example}){off}.") from error
    sources.require_labels(source)


def monitor_knn(config, embed_fn, num_classes):
  """kNN top-1 of config.knn_monitor's query images against its bank: a signal while training."""
  e = config.eval

  def features(split):
    return linear.extract_features(
        embed_fn,
        pipeline.eval_batches(dataset=config.dataset, data_dir=config.data_dir, split=split,
                              batch_size=e.batch_size, image_size=config.image_size,
                              crop_fraction=e.crop_fraction,
                              skip_corrupt=config.skip_corrupt_images))

  bank_x, bank_y = features(config.knn_monitor.bank_split)
  query_x, query_y = features(config.knn_monitor.query_split)
  return float(
      knn.knn_top1(bank_x, bank_y, query_x, query_y, k=e.knn_k, temperature=e.knn_temperature,
                   num_classes=num_classes))


def evaluate_encoder(config, embed_fn, random_init_embed_fn=None):
  """Evaluates a run's encoder, and the same protocol on a random-init encoder for reference."""
  kwargs = dict(dataset=config.dataset, data_dir=config.data_dir, image_size=config.image_size,
                eval_config=config.eval, seed=config.seed, skip_corrupt=config.skip_corrupt_images,
                max_pixels=config.max_image_pixels)
  results = evaluate_features(embed_fn, **kwargs)
  if random_init_embed_fn is not None and config.eval.random_init_baseline:
    baseline = evaluate_features(random_init_embed_fn, **kwargs)
    results.update({f"random_init_{k}": v for k, v in baseline.items() if not k.startswith("num_")})
  return results


def evaluate_exported(config):
  """Linear evaluation of an exported encoder (configs/linear_eval.py)."""
  if not config.encoder_dir:
    raise config_lib.ConfigError(
        "config.encoder_dir is not set: pass --config.encoder_dir=WORKDIR/encoder, the encoder "
        "a training run exported.")
  arch_path = epath.Path(config.encoder_dir) / "config.json"
  if not arch_path.exists():
    raise config_lib.ConfigError(
        f"config.encoder_dir={config.encoder_dir!r} holds no exported encoder ({arch_path} is "
        "missing); a finished training run exports one to WORKDIR/encoder.")
  arch = json.loads(arch_path.read_text())
  return evaluate_features(export.load_encoder(config.encoder_dir), dataset=config.dataset or
                           arch["dataset"], data_dir=config.data_dir,
                           image_size=config.image_size or arch["image_size"],
                           eval_config=config.eval, seed=config.seed,
                           skip_corrupt=config.skip_corrupt_images,
                           max_pixels=config.max_image_pixels)
