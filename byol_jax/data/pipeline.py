"""Host input pipelines: tfds splits or image folders -> tf.data -> numpy batches.

The host only decodes, crops, flips and resizes (uint8); colour augmentations run on device
(`byol_jax.data.augment`). Pretraining batches are a pure function of (seed, step, host), so a run
resumes exactly: every random crop and flip is a stateless TF op seeded by (seed, host, position of
the example in the host's stream), and each epoch's order is seeded by (seed, host, epoch). A
resumed iterator starts in the right epoch and decodes nothing it skips; it reads nothing it skips
from an image folder, and at most one chunk (see `_tfds_source`) of a tfds split.

Datasets (the `dataset` argument):
  imagenet2012, cifar10, stl10: tfds datasets, prepared beforehand in `data_dir`.
  shapes10: the embedded dataset (`byol_jax.data.embedded`); it generates itself into `data_dir`
    on first use, in about ten seconds, without network.
  folder:PATH: a folder of images with one sub-folder per class (labels by sorted sub-folder
    name), or flat (unlabelled, label -1, pretraining only). PATH may be any tf.io.gfile path
    (e.g. gs://). Its one split is "all", which takes tfds-style slices: "all[:90%]", "all[100:]".

Images that cannot be decoded stop the pipeline with a CorruptImageError naming the file or record.
With `skip_corrupt=True` they are skipped instead; the iterator's `num_skipped` attribute counts
them (and each new skip is logged). Skipping changes which examples fill later batches, so a run
that skips is not exactly resumable. An image folder's files are checked up front, before any
work: one that does not start like an image stops at once, or is left out (skip_corrupt), which
keeps a run exactly resumable.
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
_FOLDER_LABELLED_SPLITS = ("all[:90%]", "all[:90%]", "all[90%:]")
_MAX_CHUNKS = 64
_FOREVER = 2**62
# Tags that keep the stateless random streams of different purposes apart.
_ORDER, _CROP = 1, 2
CROP_MIN_AREA = 0.08  # BYOL's random-resized-crop keeps 8% to 100% of the image.

# The pipeline runs on CPU; keep a GPU build of TensorFlow off the accelerators that JAX owns.
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


class _Source(NamedTuple):
  """One host's shard of a split, as records {"image": encoded bytes, "label", "id"}."""
  name: str  # For messages: dataset and split.
  size: int
  labelled: bool
  ordered: Callable[[], tf.data.Dataset]  # The records in their fixed order.
  # Stream position -> the records from there on, epoch after epoch, each in its seeded order.
  stream: Callable[[int], tf.data.Dataset]


def _fold(seed, *values):
  """Folds integers (or integer scalar tensors) into a stateless-op seed, int64 [2]."""
  for value in values:
    seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(value, tf.int64))
  return seed


def _seed(*values):
  return _fold(tf.zeros([2], tf.int64), *values)


def _shuffle_seed(seed):
  return tf.random.stateless_uniform([], seed=seed, minval=0, maxval=2**31 - 1, dtype=tf.int64)


# ---------------------------------------------------------------------------------------------
# Sources.


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
    ds = builder.as_dataset(
        split=split, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()},
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
  host_split = tfds.split_for_jax_process(
      split, process_index=process_index, process_count=process_count)
  host = _read_tfds(builder, host_split)
  num_chunks = int(np.clip(_cardinality(host, f"{name}:{split}") // shuffle_buffer, 1,
                           _MAX_CHUNKS))
  if num_chunks == 1:
    chunks = [host]
  else:
    sub_splits = tfds.even_splits(split, n=process_count * num_chunks)
    chunks = [_read_tfds(builder, s) for s in
              sub_splits[process_index * num_chunks:(process_index + 1) * num_chunks]]
  sizes = np.array([_cardinality(c, f"{name}:{split}") for c in chunks])

  def chunk_order(epoch):
    uniform = tf.random.stateless_uniform([num_chunks], seed=_seed(seed, _ORDER, process_index,
                                                                   epoch))
    return tf.argsort(uniform)

  def epoch_records(epoch, order):
    """The chunks listed in `order`, in that order, each through its own shuffle buffer."""
    shuffled = [c.shuffle(shuffle_buffer, reshuffle_each_iteration=False,
                          seed=_shuffle_seed(_seed(seed, _ORDER, process_index, epoch, j)))
                for j, c in enumerate(chunks)]
    if num_chunks == 1:
      return shuffled[0]
    choice = tf.repeat(tf.cast(order, tf.int64), tf.gather(sizes, order))
    return tf.data.Dataset.choose_from_datasets(
        shuffled, tf.data.Dataset.from_tensor_slices(choice))

  def stream(start):
    first_epoch, offset = divmod(start, int(sizes.sum()))
    order = chunk_order(first_epoch).numpy()
    ends = np.cumsum(sizes[order])
    first_chunk = int(np.searchsorted(ends, offset, side="right"))
    within = offset - (ends[first_chunk - 1] if first_chunk else 0)
    first = epoch_records(first_epoch, order[first_chunk:]).skip(within)
    rest = tf.data.Dataset.range(first_epoch + 1, _FOREVER).flat_map(
        lambda e: epoch_records(e, chunk_order(e)))
    return first.concatenate(rest)

  return _Source(name=f"{name}:{split} (host {process_index} of {process_count})",
                 size=int(sizes.sum()), labelled="label" in builder.info.features,
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
    return sorted(os.path.join(root, f) for root, _, files in gfile.walk(folder)
                  for f in files if f.lower().endswith(_IMAGE_EXTENSIONS))

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
  """Bounds of a folder split "all", "all[a:b]" or "all[a%:b%]" (tfds' slicing syntax)."""
  match = re.fullmatch(r"all(?:\[(-?\d*)(%?):(-?\d*)(%?)\])?", split)
  if not match:
    raise DatasetError(f"A folder dataset has the one split {_FOLDER_SPLIT!r}, which may be sliced "
                       f"like 'all[:90%]' or 'all[100:]'; got {split!r}.")
  start, start_pct, stop, stop_pct = match.groups(default="")

  def bound(value, percent, default):
    if not value:
      return default
    value = int(value)
    return round(value * size / 100) if percent else value

  return slice(bound(start, start_pct, 0), bound(stop, stop_pct, size)).indices(size)[:2]


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
        tf.range(size, dtype=tf.int64), seed=_seed(seed, _ORDER, process_index, epoch))

  def stream(start):
    first_epoch, offset = divmod(start, size)
    first = tf.data.Dataset.from_tensor_slices(epoch_order(first_epoch)[offset:])
    rest = tf.data.Dataset.range(first_epoch + 1, _FOREVER).flat_map(
        lambda e: tf.data.Dataset.from_tensor_slices(epoch_order(e)))
    return first.concatenate(rest).map(read)

  return _Source(
      name=f"{FOLDER_PREFIX}{path} split {split} (host {process_index} of {process_count})",
      size=size, labelled=bool((labels >= 0).all()),
      ordered=lambda: tf.data.Dataset.range(size).map(read), stream=stream)


def _source(dataset, data_dir, split, process_index=0, process_count=1, seed=0,
            shuffle_buffer=10_000, skip_corrupt=False):
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is not in [0, {process_count}).")
  if dataset.startswith(FOLDER_PREFIX):
    return _folder_source(dataset[len(FOLDER_PREFIX):], split, process_index, process_count, seed,
                          skip_corrupt)
  return _tfds_source(dataset, data_dir, split, process_index, process_count, seed,
                      shuffle_buffer)


def _stream(source, start):
  """(position, record) from stream position `start` on, forever, epoch after epoch."""
  return tf.data.Dataset.zip(tf.data.Dataset.range(start, _FOREVER), source.stream(start))


# ---------------------------------------------------------------------------------------------
# Decoding, crops and flips.


def _decode(image_bytes):
  image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def _resize(image, size):
  image = tf.image.resize(image, [size, size], method="bicubic")
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def _random_window(shape, seed, min_area):
  """[y, x, h, w] of a random crop, drawn as the official BYOL code draws it.

  The area is uniform in [min_area, 1] of the image's, the aspect ratio w / h log-uniform in
  [3/4, 4/3]; w and h are rounded, clamped to the image, and the offsets are uniform. There are no
  retries and no fallback (tf.image.sample_distorted_bounding_box has both, and gives smaller
  crops: a mean area of about 0.4 of the image against 0.54).
  """
  height, width = shape[0], shape[1]
  area_fraction, log_ratio = tf.unstack(tf.random.stateless_uniform(
      [2], seed=seed, minval=[min_area, np.log(3 / 4)], maxval=[1.0, np.log(4 / 3)]))
  area = area_fraction * tf.cast(height * width, tf.float32)
  ratio = tf.exp(log_ratio)
  w = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(area * ratio)), tf.int32), 1, width)
  h = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(area / ratio)), tf.int32), 1, height)
  offsets = tf.random.stateless_uniform([2], seed=_fold(seed, 1), minval=0.0, maxval=1.0)
  y = tf.cast(tf.floor(offsets[0] * tf.cast(height - h + 1, tf.float32)), tf.int32)
  x = tf.cast(tf.floor(offsets[1] * tf.cast(width - w + 1, tf.float32)), tf.int32)
  return tf.stack([tf.minimum(y, height - h), tf.minimum(x, width - w), h, w])


def _random_views(image_bytes, image_size, seed, num_views, min_area=CROP_MIN_AREA):
  """`num_views` independent random-resized-crop + flip views, uint8 [V, S, S, 3].

  JPEGs are decoded only inside each crop window (fused decode and crop); other formats are
  decoded once and cropped.
  """
  seeds = [(_fold(seed, 2 * v), _fold(seed, 2 * v + 1)) for v in range(num_views)]

  def jpeg_crops():
    shape = tf.image.extract_jpeg_shape(image_bytes)
    return [tf.image.decode_and_crop_jpeg(image_bytes, _random_window(shape, s, min_area),
                                         channels=3)
            for s, _ in seeds]

  def decoded_crops():
    image = _decode(image_bytes)
    crops = []
    for s, _ in seeds:
      y, x, h, w = tf.unstack(_random_window(tf.shape(image), s, min_area))
      crops.append(image[y:y + h, x:x + w])
    return crops

  def views(crops):
    return tf.stack([tf.image.stateless_random_flip_left_right(_resize(crop, image_size), f)
                     for crop, (_, f) in zip(crops, seeds)])

  return tf.cond(tf.io.is_jpeg(image_bytes), lambda: views(jpeg_crops()),
                 lambda: views(decoded_crops()))


def _center_view(image_bytes, image_size, crop_fraction):
  """The central square of `crop_fraction` of the shorter side, resized to `image_size`.

  Equivalent to resizing the shorter side to image_size / crop_fraction and centre-cropping
  image_size (256 -> 224 by default), and it also works for images smaller than the crop.
  """
  def window(shape):
    h, w = shape[0], shape[1]
    side = tf.maximum(1, tf.cast(tf.round(crop_fraction * tf.cast(tf.minimum(h, w), tf.float32)),
                                 tf.int32))
    return tf.stack([(h - side + 1) // 2, (w - side + 1) // 2, side, side])

  def jpeg_crop():
    return tf.image.decode_and_crop_jpeg(
        image_bytes, window(tf.image.extract_jpeg_shape(image_bytes)), channels=3)

  def decoded_crop():
    image = _decode(image_bytes)
    y, x, h, w = tf.unstack(window(tf.shape(image)))
    return image[y:y + h, x:x + w]

  crop = tf.cond(tf.io.is_jpeg(image_bytes), jpeg_crop, decoded_crop)
  return _resize(crop, image_size)


# ---------------------------------------------------------------------------------------------
# Batch iterators.


def _with_options(ds):
  options = tf.data.Options()
  options.deterministic = True
  options.threading.max_intra_op_parallelism = 1
  return ds.with_options(options)


class _Batches:
  """An iterator of numpy batches that names an undecodable image, or counts skipped ones.

  Attributes:
    num_skipped: images skipped so far because they could not be decoded (skip_corrupt=True).
  """

  def __init__(self, ds, finish, records_of_batch, source, start, total=None):
    self._iterator = ds.as_numpy_iterator()
    self._finish = finish  # numpy batch (with its "position") -> the batch to yield.
    self._records_of_batch = records_of_batch  # batch number -> its (position, record) stream.
    self._source = source
    self._next_position = start
    self._total = total  # Stream length, for finite iterators.
    self._batches = 0
    self.num_skipped = 0

  def __iter__(self):
    return self

  def __next__(self):
    try:
      batch = next(self._iterator)
    except tf.errors.InvalidArgumentError as error:
      self._raise_corrupt(error)
    except StopIteration:
      if self._total is not None:
        self._count_skipped(self._total - self._next_position)
        self._next_position = self._total
      raise
    positions = batch.pop("position")
    self._count_skipped(positions[-1] + 1 - self._next_position - len(positions))
    self._next_position = positions[-1] + 1
    self._batches += 1
    return self._finish(batch)

  def _count_skipped(self, count):
    if count > 0:
      self.num_skipped += int(count)
      logging.warning("Skipped %d undecodable image(s) of %s; %d so far.", count,
                      self._source.name, self.num_skipped)

  def _raise_corrupt(self, error):
    """Finds the image of the failed batch that does not decode, and names it."""
    for position, record in self._records_of_batch(self._batches):
      try:
        _decode(record["image"])
      except tf.errors.InvalidArgumentError as decode_error:
        image_id = record["id"].numpy().decode()
        raise CorruptImageError(
            f"Cannot decode image {image_id!r} of {self._source.name} (position "
            f"{int(position)} of this host's stream): {decode_error.message.strip()} Remove or "
            f"replace it, or pass skip_corrupt=True to skip undecodable images (the iterator's "
            f"num_skipped counts them).") from error
    raise error


def per_device_batch_size(global_batch_size, process_count, local_device_count,
                          name="global_batch_size"):
  """global_batch_size / (process_count * local_device_count), which must be a whole number.

  `name` is what the error message calls the batch size (e.g. the config key that set it).
  """
  devices = process_count * local_device_count
  if global_batch_size <= 0 or global_batch_size % devices:
    lower = max(devices, global_batch_size // devices * devices)
    raise DatasetError(
        f"{name}={global_batch_size} is not divisible by the {devices} devices "
        f"({process_count} process(es) x {local_device_count} local devices): use a multiple of "
        f"{devices}, e.g. {lower} or {lower + devices}.")
  return global_batch_size // devices


def pretrain_batches(*, dataset, data_dir, split, global_batch_size, image_size, seed,
                     start_step=0, process_index=0, process_count=1, local_device_count=1,
                     shuffle_buffer=10_000, crop_min_area=CROP_MIN_AREA, skip_corrupt=False):
  """Infinite iterator of this host's pretraining batches: two uint8 views per image.

  Args:
    dataset: a name (see the module docstring).
    data_dir: the tfds data directory (None: tfds' default).
    split: e.g. dataset_info(...).pretrain_split.
    global_batch_size: examples per step over all hosts and devices.
    image_size: side of the square views.
    seed: the run's seed; the stream is a pure function of (seed, host, step).
    start_step: the first step to yield, for resuming: the iterator yields exactly the batches
      that the start_step=0 iterator yields from its start_step-th batch on.
    process_index, process_count: this host and the number of hosts; each host reads its own
      shard (tfds.split_for_jax_process).
    local_device_count: devices on this host.
    shuffle_buffer: shuffle buffer size (records); also the smallest chunk of the epoch order.
    crop_min_area: the smallest random-resized-crop, as a fraction of the image's area.
    skip_corrupt: skip undecodable images instead of raising (see the module docstring).

  Yields:
    {"view1", "view2": uint8 [local_device_count, per_device_batch, S, S, 3],
     "label": int32 [local_device_count, per_device_batch] (-1 where unlabelled),
     "index": int32 [local_device_count, per_device_batch], each example's position in the
       global batch (host p holds p * host_batch ... (p + 1) * host_batch - 1)}.
  """
  per_device = per_device_batch_size(global_batch_size, process_count, local_device_count)
  host_batch = per_device * local_device_count
  source = _source(dataset, data_dir, split, process_index, process_count, seed, shuffle_buffer,
                   skip_corrupt)
  crop_seed = _seed(seed, _CROP, process_index)
  start = start_step * host_batch

  def examples(position, record):
    views = _random_views(record["image"], image_size, _fold(crop_seed, position), 2,
                          crop_min_area)
    return {"view1": views[0], "view2": views[1], "label": record["label"],
            "position": position}

  ds = _stream(source, start).map(examples, num_parallel_calls=tf.data.AUTOTUNE)
  if skip_corrupt:
    ds = ds.ignore_errors()
  ds = _with_options(ds.batch(host_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE))
  layout = (local_device_count, per_device)
  index = (process_index * host_batch + np.arange(host_batch, dtype=np.int32)).reshape(layout)

  def finish(batch):
    return {"view1": batch["view1"].reshape(layout + batch["view1"].shape[1:]),
            "view2": batch["view2"].reshape(layout + batch["view2"].shape[1:]),
            "label": batch["label"].reshape(layout), "index": index}

  def records_of_batch(b):
    return _stream(source, start + b * host_batch).take(host_batch)

  return _Batches(ds, finish, records_of_batch, source, start)


def linear_train_batches(*, dataset, data_dir, split, batch_size, image_size, seed,
                         shuffle_buffer=10_000, skip_corrupt=False):
  """Infinite iterator of single-host linear-evaluation training batches.

  One random-resized-crop + flip view per image; yields {"image": uint8 [B, S, S, 3],
  "label": int32 [B], "mask": bool [B] (all True)}.
  """
  source = _source(dataset, data_dir, split, seed=seed, shuffle_buffer=shuffle_buffer,
                   skip_corrupt=skip_corrupt)
  _require_labels(source)
  crop_seed = _seed(seed, _CROP)

  def examples(position, record):
    view = _random_views(record["image"], image_size, _fold(crop_seed, position), 1)[0]
    return {"image": view, "label": record["label"], "position": position}

  ds = _stream(source, 0).map(examples, num_parallel_calls=tf.data.AUTOTUNE)
  if skip_corrupt:
    ds = ds.ignore_errors()
  ds = _with_options(ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))
  mask = np.ones([batch_size], bool)

  def records_of_batch(b):
    return _stream(source, b * batch_size).take(batch_size)

  return _Batches(ds, lambda batch: {**batch, "mask": mask}, records_of_batch, source, 0)


def eval_batches(*, dataset, data_dir, split, batch_size, image_size, crop_fraction=0.875,
                 skip_corrupt=False):
  """Finite iterator over a whole split, each example once, in a fixed order (single host).

  Images are centre-cropped (see `_center_view`). The last batch is padded to `batch_size`;
  yields {"image": uint8 [B, S, S, 3], "label": int32 [B], "mask": bool [B] (False on padding)}.
  """
  source = _source(dataset, data_dir, split, skip_corrupt=skip_corrupt)
  _require_labels(source)

  def records():
    return tf.data.Dataset.zip(tf.data.Dataset.range(source.size), source.ordered())

  def examples(position, record):
    return {"image": _center_view(record["image"], image_size, crop_fraction),
            "label": record["label"], "position": position}

  ds = records().map(examples, num_parallel_calls=tf.data.AUTOTUNE)
  if skip_corrupt:
    ds = ds.ignore_errors()
  ds = _with_options(ds.batch(batch_size).prefetch(tf.data.AUTOTUNE))

  def finish(batch):
    n = len(batch["label"])
    pad = [(0, batch_size - n)]
    return {"image": np.pad(batch["image"], pad + [(0, 0)] * 3),
            "label": np.pad(batch["label"], pad), "mask": np.arange(batch_size) < n}

  def records_of_batch(b):
    return records().skip(b * batch_size).take(batch_size)

  return _Batches(ds, finish, records_of_batch, source, 0, total=source.size)


def _require_labels(source):
  if not source.labelled:
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
    pretrain, train, test = _FOLDER_LABELLED_SPLITS
    start, stop = _slice_bounds(pretrain, len(labels))
    return DatasetInfo(stop - start, len(classes), pretrain, train, test, left_out)
  builder = _tfds_builder(dataset, data_dir)
  pretrain, train, test = _SPLITS.get(dataset, _DEFAULT_SPLITS)
  label = builder.info.features["label"] if "label" in builder.info.features else None
  num_classes = label.num_classes if label is not None else 0
  size = _cardinality(_read_tfds(builder, pretrain), f"{dataset}:{pretrain}")
  return DatasetInfo(size, num_classes, pretrain, train, test)
