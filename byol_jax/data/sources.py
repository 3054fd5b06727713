"""Where examples come from: the dataset registry, tfds preparation and image folders, each host's
shard as a resumable stream of encoded records.

Datasets (the `dataset` argument):
  imagenet2012, cifar10, stl10: tfds datasets, prepared beforehand in `data_dir`.
  shapes10, textures10: generated datasets (`byol_jax.data.embedded`, `byol_jax.data.textures10`);
    each generates itself into `data_dir` on first use, without network.
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
import struct
import time
from typing import NamedTuple

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from byol_jax import files
from byol_jax.data import embedded
from byol_jax.data import seeds
from byol_jax.data import textures10

FOLDER_PREFIX = "folder:"
# (pretrain, linear-train, test) splits of the named datasets; other tfds datasets get the first.
_SPLITS = {
    "imagenet2012": ("train", "train", "validation"),
    "cifar10": ("train", "train", "test"),
    "stl10": ("unlabelled+train", "train", "test"),
    embedded.NAME: ("train", "train", "test"),
    textures10.NAME: ("train", "train", "test"),
}
# Datasets that generate themselves into data_dir, offline.
_GENERATED = (embedded.NAME, textures10.NAME)
_DEFAULT_SPLITS = ("train", "train", "test")
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# Start-of-frame markers, which carry a JPEG's size: SOF0-SOF15 but DHT, JPG and DAC.
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_READ_ATTEMPTS = 3
# Sub-folder names that mark a folder of splits, not of classes.
_SPLIT_FOLDERS = ("train", "val", "valid", "validation", "test")
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
        f"{' or '.join(map(repr, _GENERATED))} (generated, offline) or '{FOLDER_PREFIX}PATH'."
    ) from error
  if name in _GENERATED and not builder.is_prepared():
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


class ImageHeader(NamedTuple):
  width: int
  height: int
  orientation: int = 1  # EXIF orientation of a JPEG: 1 is upright, 2-8 flips and rotations.


def _read_header(path):
  """The ImageHeader of an image file, or None when it does not start like a JPEG, PNG, GIF or BMP.

  Reads only as far as the dimensions (a JPEG's frame header, past its EXIF data). A read error is
  retried, then raised as a DatasetError: a file that cannot be read is not a corrupt image.
  """
  for attempt in range(_READ_ATTEMPTS):
    try:
      # Bytes: a local file name need not be UTF-8.
      with tf.io.gfile.GFile(os.fsencode(path) if files.is_local(path) else path, "rb") as f:
        return _parse_header(f)
    except tf.errors.OpError as error:
      if attempt + 1 == _READ_ATTEMPTS:
        raise DatasetError(f"Cannot read {path!r} ({error.message.strip()}) after "
                           f"{_READ_ATTEMPTS} attempts. Fix its permissions or the storage, "
                           "then rerun.") from error
      time.sleep(0.5 * 2**attempt)
  raise AssertionError("unreachable")


def _parse_header(f):
  head = f.read(32)
  if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24:
    return ImageHeader(*struct.unpack(">II", head[16:24]))
  if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
    return ImageHeader(*struct.unpack("<HH", head[6:10]))
  if head.startswith(b"BM") and len(head) >= 26:
    if struct.unpack("<I", head[14:18])[0] == 12:  # The old OS/2 header: 16-bit sizes.
      return ImageHeader(*struct.unpack("<HH", head[18:22]))
    width, height = struct.unpack("<ii", head[18:26])
    return ImageHeader(abs(width), abs(height))
  if head.startswith(b"\xff\xd8\xff"):
    return _parse_jpeg(f, head)
  return None


def _parse_jpeg(f, data):
  """Walks a JPEG's marker segments to its frame header, reading EXIF orientation on the way."""
  position, orientation = 2, 1

  def need(size):
    nonlocal data
    while len(data) < size:
      more = f.read(max(size - len(data), 65536))
      if not more:
        return False
      data += more
    return True

  while need(position + 4):
    if data[position] != 0xFF:
      return None
    marker = data[position + 1]
    if marker == 0xFF:  # Fill byte.
      position += 1
      continue
    length = struct.unpack(">H", data[position + 2:position + 4])[0]
    if marker in _JPEG_FRAME_MARKERS:
      if not need(position + 9):
        return None
      height, width = struct.unpack(">HH", data[position + 5:position + 9])
      return ImageHeader(width, height, orientation)
    if marker == 0xDA:  # Scan data before any frame header.
      return None
    if marker == 0xE1 and need(position + 4 + length - 2):
      orientation = _exif_orientation(data[position + 4:position + 2 + length]) or orientation
    position += 2 + length
  return None


def _exif_orientation(segment):
  """The orientation tag (0x0112) of an APP1 EXIF segment's first IFD, or None."""
  if not segment.startswith(b"Exif\0\0") or len(segment) < 14:
    return None
  tiff = segment[6:]
  order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
  if order is None:
    return None
  ifd = struct.unpack(order + "I", tiff[4:8])[0]
  if len(tiff) < ifd + 2:
    return None
  for i in range(struct.unpack(order + "H", tiff[ifd:ifd + 2])[0]):
    entry = tiff[ifd + 2 + 12 * i:ifd + 14 + 12 * i]
    if len(entry) == 12 and struct.unpack(order + "H", entry[:2])[0] == 0x0112:
      value = struct.unpack(order + "H", entry[8:10])[0]
      return value if 1 <= value <= 8 else None
  return None


def _headers(path, files, skip_corrupt):
  """{file: ImageHeader} of the files that start like an image, read in parallel; the others
  raise CorruptImageError, or are left out (skip_corrupt).

  Reading a header per file is cheap next to a run (threads hide a remote store's latency) and
  finds empty, non-image and garbage files, and sizes, before any work starts. A truncated image
  with a good header is found only when the stream decodes it.
  """
  with concurrent.futures.ThreadPoolExecutor(_HEADER_THREADS) as pool:
    headers = dict(zip(files, pool.map(_read_header, files)))
  bad = [f for f, header in headers.items() if header is None]
  if bad and not skip_corrupt:
    raise CorruptImageError(
        f"{len(bad)} of the {len(files)} files of image folder {path!r} are not images (empty, "
        f"or not starting like a JPEG, PNG, GIF or BMP): {bad[:_MAX_NAMED]}"
        f"{' ...' if len(bad) > _MAX_NAMED else ''}. Remove or replace them, or pass "
        f"--config.skip_corrupt_images=true to leave out undecodable images and count them.")
  if bad:
    logging.warning("Leaving out %d file(s) of %s that are not images: %s", len(bad), path,
                    bad[:_MAX_NAMED])
  return {f: header for f, header in headers.items() if header is not None}


def _listing(path):
  """(class names, {class: its files}, other files by extension) of an image folder; a flat folder
  has the one class None. Local symlinks are followed, but each folder and file is taken once."""
  local = files.is_local(path)
  seen_folders, seen_files, repeats, others = set(), {}, [], {}

  def files_under(folder, label):
    found, stack = [], [folder]
    while stack:
      current = stack.pop()
      real = os.path.realpath(current) if local else current
      if real in seen_folders:
        repeats.append(f"folder {current} (already read as {real})")
        continue
      seen_folders.add(real)
      for name in sorted(os.listdir(current) if local else tf.io.gfile.listdir(current)):
        name = name.rstrip("/")
        full = os.path.join(current, name)
        if name.startswith("."):
          continue
        if os.path.isdir(full) if local else tf.io.gfile.isdir(full):
          stack.append(full)
        elif not name.lower().endswith(_IMAGE_EXTENSIONS):
          extension = os.path.splitext(name)[1].lower() or "(none)"
          others[extension] = others.get(extension, 0) + 1
        else:
          real_file = os.path.realpath(full) if local else full
          if real_file in seen_files:
            first, first_label = seen_files[real_file]
            if first_label != label:
              raise DatasetError(
                  f"Image folder {path!r} has the same file under two classes: {first} "
                  f"({first_label}) and {full} ({label}), through a link. Fix: keep one copy.")
            repeats.append(f"file {full} (already read as {first})")
            continue
          seen_files[real_file] = (full, label)
          found.append(full)
    return sorted(found)

  entries = sorted(e.rstrip("/") for e in tf.io.gfile.listdir(path) if not e.startswith("."))
  classes = [e for e in entries if tf.io.gfile.isdir(os.path.join(path, e))]
  top_files = [e for e in entries if e.lower().endswith(_IMAGE_EXTENSIONS)]
  if classes and top_files:
    raise DatasetError(f"Image folder {path!r} mixes class sub-folders {classes[:3]} with images "
                       f"at its top level {top_files[:3]}: use one layout.")
  split_like = [c for c in classes if c.lower() in _SPLIT_FOLDERS]
  if len(split_like) >= 2 or (split_like and split_like == classes):
    raise DatasetError(
        f"Image folder {path!r} has sub-folders {split_like} that look like splits, not classes. "
        "Fix: point the dataset at one split, e.g. "
        f"{FOLDER_PREFIX}{os.path.join(path, split_like[0])}"
        " (its sub-folders are the classes; byol_jax holds out 10% of it for testing).")
  if classes:
    per_class = {c: files_under(os.path.join(path, c), c) for c in classes}
    empty = [c for c, found in per_class.items() if not found]
    if empty:
      raise DatasetError(f"Class folders {empty[:_MAX_NAMED]} of image folder {path!r} hold no "
                         f"images ({', '.join(_IMAGE_EXTENSIONS)}). Fix: remove them or add "
                         "images; each sub-folder is a class.")
  else:
    per_class = {None: files_under(path, None)}
  if repeats:
    logging.warning(
        "Image folder %s: %d folder(s) or file(s) reached twice through links were "
        "read once: %s", path, len(repeats), repeats[:_MAX_NAMED])
  if others:
    logging.warning(
        "Image folder %s: %d file(s) that are not JPEG, PNG, GIF or BMP were not read "
        "(by extension: %s).", path, sum(others.values()),
        ", ".join(f"{k} {v}" for k, v in sorted(others.items())))
  return classes, per_class


@functools.lru_cache(maxsize=None)
def _list_folder(path, skip_corrupt=False):
  """A folder's image files in a fixed shuffled order, their labels, headers and class names, and
  the number of files left out as not images (listed and checked once per process)."""
  if not tf.io.gfile.isdir(path):
    raise DatasetNotFoundError(f"Image folder {path!r} does not exist.")
  classes, per_class = _listing(path)
  files = [f for found in per_class.values() for f in found]
  labels = [i for i, found in enumerate(per_class.values()) for _ in found]
  if not classes:
    labels = [-1] * len(files)
  if not files:
    raise DatasetNotFoundError(
        f"Image folder {path!r} holds no images ({', '.join(_IMAGE_EXTENSIONS)}).")
  headers = _headers(path, files, skip_corrupt)
  left_out = len(files) - len(headers)
  labels = [label for f, label in zip(files, labels) if f in headers]
  files = [f for f in files if f in headers]
  if not files:
    raise DatasetNotFoundError(f"Image folder {path!r} holds no readable images.")
  order = np.random.default_rng(0).permutation(len(files))  # Slices mix the classes.
  files = [files[i] for i in order]
  return (files, np.array(labels, np.int32)[order], [headers[f] for f in files], classes, left_out)


def _check_sizes(path, files, headers, max_pixels):
  """Refuses images over `max_pixels`, which could take gigabytes each to decode."""
  big = [(f, h) for f, h in zip(files, headers) if h.width * h.height > max_pixels]
  if big:
    named = ", ".join(f"{f} ({h.width}x{h.height})" for f, h in big[:_MAX_NAMED])
    raise DatasetError(
        f"{len(big)} image(s) of folder {path!r} have more than config.max_image_pixels="
        f"{max_pixels:,} pixels: {named}{' ...' if len(big) > _MAX_NAMED else ''}. Decoding one "
        "takes about 3 bytes per pixel of memory in each parallel decode. Fix: shrink or remove "
        "them, or raise --config.max_image_pixels if the host has the memory.")


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


def _upright(image_bytes, orientation):
  """A JPEG whose EXIF orientation is not 1, turned upright and re-encoded as PNG; else as it is.

  JPEG decoders ignore EXIF; re-encoding only these keeps the others' fused decode-and-crop.
  """

  def turned():
    image = tf.io.decode_jpeg(image_bytes, channels=3)
    transposed = tf.transpose(image, [1, 0, 2])
    upright = tf.switch_case(orientation - 2, [
        lambda: image[:, ::-1], lambda: image[::-1, ::-1], lambda: image[::-1], lambda: transposed,
        lambda: transposed[:, ::-1], lambda: transposed[::-1, ::-1], lambda: transposed[::-1]
    ])
    return tf.io.encode_png(upright)

  return tf.cond(orientation > 1, turned, lambda: image_bytes)


def _folder_source(path, split, process_index, process_count, seed, skip_corrupt):
  """A host's shard of a folder split; each epoch is a seeded permutation of its files."""
  files, labels, headers, _, _ = _list_folder(path, skip_corrupt)
  start, stop = _slice_bounds(split, len(files))
  bounds = np.linspace(start, stop, process_count + 1).astype(int)
  host = slice(bounds[process_index], bounds[process_index + 1])
  files, labels, headers = files[host], labels[host], headers[host]
  size = len(files)
  if not size:
    raise DatasetError(f"Split {split!r} of image folder {path!r} gives host {process_index} of "
                       f"{process_count} no images.")
  # Bytes: a local file name need not be UTF-8.
  files_t = tf.constant([os.fsencode(f) for f in files])
  labels_t = tf.constant(labels)
  orientations_t = tf.constant([h.orientation for h in headers], tf.int32)

  def read(i):
    return {
        "image": _upright(tf.io.read_file(files_t[i]), orientations_t[i]), "label": labels_t[i],
        "id": files_t[i]
    }

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


def dataset_info(dataset, data_dir, skip_corrupt=False, max_pixels=None):
  """Sizes and split names of a dataset (raises DatasetNotFoundError if it is not prepared).

  An image folder's files are checked up front (see `_headers`): CorruptImageError, or with
  `skip_corrupt` the files that are not images are left out and counted in `num_left_out`; and
  an image of more than `max_pixels` (if given) is refused with a DatasetError.
  """
  if dataset.startswith(FOLDER_PREFIX):
    path = dataset[len(FOLDER_PREFIX):]
    files, labels, headers, classes, left_out = _list_folder(path, skip_corrupt)
    if max_pixels is not None:
      _check_sizes(path, files, headers, max_pixels)
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
