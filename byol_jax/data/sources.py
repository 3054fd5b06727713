"""Where examples come from: the dataset registry, tfds preparation and image folders, each host's
shard as a resumable stream of encoded records.

Datasets (the `dataset` argument):
  imagenet2012, cifar10, stl10: tfds datasets, prepared beforehand in `data_dir`.
  shapes10: the embedded dataset (`byol_jax.data.embedded`); it generates itself into `data_dir`
    on first use, without network.
  folder:PATH: a folder of images with one sub-folder per class (labels by sorted sub-folder
    name), or flat (unlabelled, label -1, pretraining only). PATH may be any tf.io.gfile path
    (e.g. gs://). Its one split is "all", which takes tfds-style slices: "all[:90%]", "all[100:]".

A stream resumed at a position reads nothing it skips from an image folder, and at most one chunk
(see `_tfds_source`) of a tfds split. An image folder's files are checked up front, before any
work: one that does not start like an image stops at once with a CorruptImageError, or is left
out (skip_corrupt).
"""
from collections.abc import Callable
import concurrent.futures
import functools
import os
import re
from typing import NamedTuple

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from byol_jax.data import embedded
from byol_jax.data import seeds

FOLDER_PREFIX = "folder:"
# (pretrain, linear-train, test) splits of the named datasets; other tfds datasets get the first.
_SPLITS = {
    "imagenet2012": ("train", "train", "validation"),
    "cifar10": ("train", "train", "test"),
    "stl10": ("unlabelled+train", "train", "test"),
    embedded.NAME: ("train", "train", "test"),
}
_DEFAULT_SPLITS = ("train", "train", "test")
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
_HEADER_THREADS = 32
_MAX_NAMED = 5
_FOLDER_SPLIT = "all"
_FOLDER_LABELED_SPLITS = ("all[:90%]", "all[:90%]", "all[90%:]")
_MAX_CHUNKS = 64
_FOREVER = 2**62

# The host pipeline runs on CPU; keep a GPU build of TensorFlow off the accelerators that JAX owns.
try:
  tf.config.set_visible_devices([], "GPU")
except RuntimeError:  # TensorFlow was initialised already, by its user's choice.
  pass


class DatasetNotFoundError(Exception):
  """The dataset is not prepared in the data directory (it cannot be downloaded on the fly)."""


class CorruptImageError(Exception):
  """An image could not be decoded."""


class DatasetError(ValueError):
  """A dataset that cannot be read as asked: unknown name, folder layout, split or batch size."""


class DatasetInfo(NamedTuple):
  num_train_examples: int  # In the pretraining split: for steps per epoch.
  num_classes: int  # 0 for an unlabelled folder.
  pretrain_split: str
  train_split: str | None  # None for an unlabelled folder.
  test_split: str | None
  num_left_out: int = 0  # Files of a folder left out up front as not images (skip_corrupt).


class Source(NamedTuple):
  """One host's shard of a split, as records {"image": encoded bytes, "label", "id"}."""
  name: str  # For messages: dataset and split.
  size: int
  labeled: bool
  ordered: Callable[[], tf.data.Dataset]  # The records in their fixed order.
  # Stream position -> the records from there on, epoch after epoch, each in its seeded order.
  stream: Callable[[int], tf.data.Dataset]


def _tfds_builder(name, data_dir):
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as error:
    raise DatasetError(
        f"Unknown dataset {name!r}: use a tfds name (e.g. imagenet2012, cifar10, stl10), "
        f"{embedded.NAME!r} (embedded, offline) or '{FOLDER_PREFIX}PATH'.") from error
  if name == embedded.NAME and not builder.is_prepared():
    logging.info("Generating the embedded dataset %s into %s.", name, builder.data_dir)
    try:
      builder.download_and_prepare()
    except OSError:  # Another process (host) may have finished the same, identical, data first.
      builder = tfds.builder(name, data_dir=data_dir)
      if not builder.is_prepared():
        raise
  return builder


def _how_to_prepare(builder):
  root = str(builder.data_dir_root)
  if builder.name == "imagenet2012":
    how = (f"ImageNet needs a manual download: put ILSVRC2012_img_train.tar and "
           f"ILSVRC2012_img_val.tar (from image-net.org) in {root}/downloads/manual/ (or in a "
           f"folder given by --manual_dir), then run `tfds build imagenet2012 --data_dir={root}` "
           f"on a machine with enough disk (about 300 GB during preparation).")
  else:
    how = (f"Prepare it on a machine with network access: `tfds build {builder.name} "
           f"--data_dir={root}`, then copy {root}/{builder.name} here.")
  return (f"Dataset {builder.name!r} is not prepared in data_dir {root!r} (looked for "
          f"{builder.data_dir}). {how}")


def _read_tfds(builder, split):
  """Encoded records of a split (or sub-split) in their stored order."""
  try:
    ds = builder.as_dataset(split=split, shuffle_files=False,
                            decoders={"image": tfds.decode.SkipDecoding()},
                            read_config=tfds.ReadConfig(add_tfds_id=True, try_autocache=False))
  except AssertionError as error:  # What tfds raises when the data files are missing.
    raise DatasetNotFoundError(_how_to_prepare(builder)) from error
  has_label = "label" in builder.info.features

  def record(example):
    label = tf.cast(example["label"], tf.int32) if has_label else tf.constant(-1, tf.int32)
    return {"image": example["image"], "label": label, "id": example["tfds_id"]}

  return ds.map(record, num_parallel_calls=tf.data.AUTOTUNE)


def _cardinality(ds, what):
  size = int(ds.cardinality())
  if size < 0:
    raise ValueError(f"The size of {what} is unknown to tf.data.")
  return size


def _tfds_source(name, data_dir, split, process_index, process_count, seed, shuffle_buffer):
  """A host's shard, read per epoch as seeded chunks in a seeded order.

  The shard is cut into at most 64 chunks of at least `shuffle_buffer` examples. Each epoch reads
  the chunks in a random order, each chunk (stored order) through its own seeded shuffle buffer.
  tfds stores datasets already shuffled, so this mixes like tfds' file shuffling, with seeds a
  resumed run can recompute, and a resumed run skips whole chunks without reading them.
  """
  if shuffle_buffer < 1:
    raise ValueError(f"shuffle_buffer must be at least 1, got {shuffle_buffer}.")
  builder = _tfds_builder(name, data_dir)
  if "image" not in builder.info.features:
    raise DatasetError(f"Dataset {name!r} has no 'image' feature.")
  host_split = tfds.split_for_jax_process(split, process_index=process_index,
                                          process_count=process_count)
  host = _read_tfds(builder, host_split)
  num_chunks = int(np.clip(_cardinality(host, f"{name}:{split}") // shuffle_buffer, 1, _MAX_CHUNKS))
  if num_chunks == 1:
    chunks = [host]
  else:
    sub_splits = tfds.even_splits(split, n=process_count * num_chunks)
    chunks = [
        _read_tfds(builder, s)
        for s in sub_splits[process_index * num_chunks:(process_index + 1) * num_chunks]
    ]
  sizes = np.array([_cardinality(c, f"{name}:{split}") for c in chunks])

  def chunk_order(epoch):
    epoch_seed = seeds.of(seed, seeds.ORDER, process_index, epoch)
    uniform = tf.random.stateless_uniform([num_chunks], seed=epoch_seed)
    return tf.argsort(uniform)

  def epoch_records(epoch, order):
    """The chunks listed in `order`, in that order, each through its own shuffle buffer."""
    shuffled = [
        c.shuffle(shuffle_buffer, reshuffle_each_iteration=False,
                  seed=seeds.shuffle_seed(seeds.of(seed, seeds.ORDER, process_index, epoch, j)))
        for j, c in enumerate(chunks)
    ]
    if num_chunks == 1:
      return shuffled[0]
    choice = tf.repeat(tf.cast(order, tf.int64), tf.gather(sizes, order))
    return tf.data.Dataset.choose_from_datasets(shuffled,
                                                tf.data.Dataset.from_tensor_slices(choice))

  def stream(start):
    first_epoch, offset = divmod(start, int(sizes.sum()))
    order = chunk_order(first_epoch).numpy()
    ends = np.cumsum(sizes[order])
    first_chunk = int(np.searchsorted(ends, offset, side="right"))
    within = offset - (ends[first_chunk - 1] if first_chunk else 0)
    first = epoch_records(first_epoch, order[first_chunk:]).skip(within)
    later_epochs = tf.data.Dataset.range(first_epoch + 1, _FOREVER)
    rest = later_epochs.flat_map(lambda e: epoch_records(e, chunk_order(e)))
    return first.concatenate(rest)

  return Source(name=f"{name}:{split} (host {process_index} of {process_count})",
                size=int(sizes.sum()), labeled="label" in builder.info.features,
                ordered=lambda: host, stream=stream)


def _has_image_header(path):
  try:
    with tf.io.gfile.GFile(path, "rb") as f:
      return f.read(8).startswith(_IMAGE_MAGIC)
  except tf.errors.OpError:
    return False


def _left_out(path, files, skip_corrupt):
  """The files that do not start like a JPEG, PNG, GIF or BMP, or raises CorruptImageError.

  Reading 8 bytes per file is cheap next to a run (threads hide a remote store's latency) and
  finds empty, non-image and garbage files before any work starts. A truncated image with a good
  header is found only when the stream decodes it.
  """
  with concurrent.futures.ThreadPoolExecutor(_HEADER_THREADS) as pool:
    bad = [f for f, ok in zip(files, pool.map(_has_image_header, files)) if not ok]
  if bad and not skip_corrupt:
    raise CorruptImageError(
        f"{len(bad)} of the {len(files)} files of image folder {path!r} are not images (empty, "
        f"or not starting like a JPEG, PNG, GIF or BMP): {bad[:_MAX_NAMED]}"
        f"{' ...' if len(bad) > _MAX_NAMED else ''}. Remove or replace them, or pass "
        f"--config.skip_corrupt_images=true to leave out undecodable images and count them.")
  if bad:
    logging.warning("Leaving out %d file(s) of %s that are not images: %s", len(bad), path,
                    bad[:_MAX_NAMED])
  return set(bad)


@functools.lru_cache(maxsize=None)
def _list_folder(path, skip_corrupt=False):
  """A folder's image files in a fixed shuffled order, their labels, the class names, and the
  number of files left out as not images (listed and checked once per process)."""
  gfile = tf.io.gfile
  if not gfile.isdir(path):
    raise DatasetNotFoundError(f"Image folder {path!r} does not exist.")

  def images_in(folder):
    return sorted(
        os.path.join(root, f)
        for root, _, files in gfile.walk(folder)
        for f in files
        if f.lower().endswith(_IMAGE_EXTENSIONS))

  entries = sorted(e for e in gfile.listdir(path) if not e.startswith("."))
  classes = [e.rstrip("/") for e in entries if gfile.isdir(os.path.join(path, e))]
  top_files = [e for e in entries if e.lower().endswith(_IMAGE_EXTENSIONS)]
  if classes and top_files:
    raise DatasetError(f"Image folder {path!r} mixes class sub-folders {classes[:3]} with images "
                       f"at its top level {top_files[:3]}: use one layout.")
  if classes:
    per_class = [images_in(os.path.join(path, c)) for c in classes]
    files = [f for class_files in per_class for f in class_files]
    labels = [i for i, class_files in enumerate(per_class) for _ in class_files]
  else:
    files = [os.path.join(path, f) for f in top_files]
    labels = [-1] * len(files)
  if not files:
    raise DatasetNotFoundError(
        f"Image folder {path!r} holds no images ({', '.join(_IMAGE_EXTENSIONS)}).")
  left_out = _left_out(path, files, skip_corrupt)
  if left_out:
    labels = [label for f, label in zip(files, labels) if f not in left_out]
    files = [f for f in files if f not in left_out]
    if not files:
      raise DatasetNotFoundError(f"Image folder {path!r} holds no readable images.")
  order = np.random.default_rng(0).permutation(len(files))  # Slices mix the classes.
  return (np.array(files)[order], np.array(labels, np.int32)[order], classes, len(left_out))


def _slice_bounds(split, size):
  """[start, stop) of a folder split: "all", sliced by tfds' own rules ("all[:90%]", "all[100:]").

  (tfds reserves the name "all", so its rules are applied to the same slice of a split "train".)
  """
  info = {"train": tfds.core.SplitInfo(name="train", shard_lengths=[size], num_bytes=0)}
  one_slice = re.fullmatch(re.escape(_FOLDER_SPLIT) + r"(\[[^][+]*\])?", split)
  try:
    if not one_slice:
      raise ValueError(f"not {_FOLDER_SPLIT!r} or one slice of it")
    spec = "train" + (one_slice.group(1) or "")
    instructions = tfds.core.ReadInstruction.from_spec(spec).to_absolute(info)
  except (ValueError, AssertionError) as error:
    raise DatasetError(f"A folder dataset has the one split {_FOLDER_SPLIT!r}, which may be sliced "
                       f"like 'all[:90%]' or 'all[100:]'; {split!r} is not a slice of its {size} "
                       f"images ({error}).") from error
  return instructions[0].from_ or 0, size if instructions[0].to is None else instructions[0].to


def _folder_source(path, split, process_index, process_count, seed, skip_corrupt):
  """A host's shard of a folder split; each epoch is a seeded permutation of its files."""
  files, labels, _, _ = _list_folder(path, skip_corrupt)
  start, stop = _slice_bounds(split, len(files))
  bounds = np.linspace(start, stop, process_count + 1).astype(int)
  files = files[bounds[process_index]:bounds[process_index + 1]]
  labels = labels[bounds[process_index]:bounds[process_index + 1]]
  size = len(files)
  if not size:
    raise DatasetError(f"Split {split!r} of image folder {path!r} gives host {process_index} of "
                       f"{process_count} no images.")
  files_t, labels_t = tf.constant(files), tf.constant(labels)

  def read(i):
    return {"image": tf.io.read_file(files_t[i]), "label": labels_t[i], "id": files_t[i]}

  def epoch_order(epoch):
    return tf.random.experimental.stateless_shuffle(
        tf.range(size, dtype=tf.int64), seed=seeds.of(seed, seeds.ORDER, process_index, epoch))

  def stream(start):
    first_epoch, offset = divmod(start, size)
    first = tf.data.Dataset.from_tensor_slices(epoch_order(first_epoch)[offset:])
    later_epochs = tf.data.Dataset.range(first_epoch + 1, _FOREVER)
    rest = later_epochs.flat_map(lambda e: tf.data.Dataset.from_tensor_slices(epoch_order(e)))
    return first.concatenate(rest).map(read)

  return Source(
      name=f"{FOLDER_PREFIX}{path} split {split} (host {process_index} of {process_count})",
      size=size, labeled=bool((labels >= 0).all()),
      ordered=lambda: tf.data.Dataset.range(size).map(read), stream=stream)


def source(dataset, data_dir, split, process_index=0, process_count=1, seed=0,
           shuffle_buffer=10_000, skip_corrupt=False):
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is not in [0, {process_count}).")
  if dataset.startswith(FOLDER_PREFIX):
    return _folder_source(dataset[len(FOLDER_PREFIX):], split, process_index, process_count, seed,
                          skip_corrupt)
  return _tfds_source(dataset, data_dir, split, process_index, process_count, seed, shuffle_buffer)


def stream_from(source, start):
  """(position, record) from stream position `start` on, forever, epoch after epoch."""
  return tf.data.Dataset.zip(tf.data.Dataset.range(start, _FOREVER), source.stream(start))


def require_labels(source):
  if not source.labeled:
    raise DatasetError(f"{source.name} has no labels (a flat image folder): it can be used for "
                       f"pretraining only. Put the images of each class in their own sub-folder.")


def dataset_info(dataset, data_dir, skip_corrupt=False):
  """Sizes and split names of a dataset (raises DatasetNotFoundError if it is not prepared).

  An image folder's files are checked up front (see `_left_out`): CorruptImageError, or with
  `skip_corrupt` the files that are not images are left out and counted in `num_left_out`.
  """
  if dataset.startswith(FOLDER_PREFIX):
    files, labels, classes, left_out = _list_folder(dataset[len(FOLDER_PREFIX):], skip_corrupt)
    if not classes:
      return DatasetInfo(len(files), 0, _FOLDER_SPLIT, None, None, left_out)
    pretrain, train, test = _FOLDER_LABELED_SPLITS
    start, stop = _slice_bounds(pretrain, len(labels))
    return DatasetInfo(stop - start, len(classes), pretrain, train, test, left_out)
  builder = _tfds_builder(dataset, data_dir)
  pretrain, train, test = _SPLITS.get(dataset, _DEFAULT_SPLITS)
  label = builder.info.features["label"] if "label" in builder.info.features else None
  num_classes = label.num_classes if label is not None else 0
  size = _cardinality(_read_tfds(builder, pretrain), f"{dataset}:{pretrain}")
  return DatasetInfo(size, num_classes, pretrain, train, test)
