"""Host input pipelines: a dataset's records -> two random views, or one, or centre views -> numpy
batches, through one tf.data skeleton.

The host only decodes, crops, flips and resizes (uint8; `crops`); colour augmentations run on
device (`byol_jax.data.augment`). Pretraining batches are a pure function of (seed, step, host), so
a run resumes exactly: every random crop and flip is a stateless TF op seeded by (seed, host,
position of the example in the host's stream), and each epoch's order by (seed, host, epoch)
(`sources`). A resumed iterator starts in the right epoch and decodes nothing it skips.

Images that cannot be decoded stop the pipeline with a CorruptImageError naming the file or record.
With `skip_corrupt=True` they are skipped instead; the iterator's `num_skipped` attribute counts
them (and each new skip is logged). Skipping changes which examples fill later batches, so a run
that skips is not exactly resumable. An image folder's files are checked up front instead
(`sources.dataset_info`), which keeps a run exactly resumable.
"""
from absl import logging
import numpy as np
import tensorflow as tf

from byol_jax.data import crops
from byol_jax.data import seeds
from byol_jax.data import sources


class _Batches:
  """Numpy batches of `examples` over (position, record) streams; names an undecodable image,
  or counts skipped ones.

  `records(start)` gives the (position, record) pairs from stream position `start` on;
  `examples(position, record)` maps one pair to an example dict (with its "position"), and
  `finish` a numpy batch to what the iterator yields. A finite stream (`total` records) keeps its
  last, partial batch.

  Attributes:
    num_skipped: images skipped so far because they could not be decoded (skip_corrupt=True).
  """

  def __init__(self, records, examples, finish, *, batch_size, source, start, skip_corrupt,
               total=None):
    ds = records(start).map(examples, num_parallel_calls=tf.data.AUTOTUNE)
    if skip_corrupt:
      ds = ds.ignore_errors()
    ds = ds.batch(batch_size, drop_remainder=total is None).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    options.threading.max_intra_op_parallelism = 1
    self._iterator = ds.with_options(options).as_numpy_iterator()
    self._records, self._batch_size = records, batch_size
    self._finish = finish
    self._source = source
    self._start = start
    self._next_position = start
    self._total = total
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
      logging.warning("Skipped %d undecodable image(s) of %s; %d so far.", count, self._source.name,
                      self.num_skipped)

  def _raise_corrupt(self, error):
    """Finds the image of the failed batch that does not decode, and names it."""
    first = self._start + self._batches * self._batch_size
    for position, record in self._records(first).take(self._batch_size):
      try:
        crops.decode(record["image"])
      except tf.errors.InvalidArgumentError as decode_error:
        image_id = record["id"].numpy().decode(errors="replace")
        raise sources.CorruptImageError(
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
    raise sources.DatasetError(
        f"{name}={global_batch_size} is not divisible by the {devices} devices "
        f"({process_count} process(es) x {local_device_count} local devices): use a multiple of "
        f"{devices}, e.g. {lower} or {lower + devices}.")
  return global_batch_size // devices


def pretrain_batches(*, dataset, data_dir, split, global_batch_size, image_size, seed, start_step=0,
                     process_index=0, process_count=1, local_device_count=1, shuffle_buffer=10_000,
                     crop_min_area=crops.CROP_MIN_AREA, skip_corrupt=False):
  """Infinite iterator of this host's pretraining batches: two uint8 views per image.

  Args:
    dataset: a name (see `sources`).
    data_dir: the tfds data directory (None: tfds' default).
    split: e.g. sources.dataset_info(...).pretrain_split.
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
  source = sources.source(dataset, data_dir, split, process_index, process_count, seed,
                          shuffle_buffer, skip_corrupt)
  crop_seed = seeds.of(seed, seeds.CROP, process_index)

  def examples(position, record):
    views = crops.random_views(record["image"], image_size, seeds.fold_in(crop_seed, position), 2,
                               crop_min_area)
    return {"view1": views[0], "view2": views[1], "label": record["label"], "position": position}

  layout = (local_device_count, per_device)
  index = (process_index * host_batch + np.arange(host_batch, dtype=np.int32)).reshape(layout)

  def finish(batch):
    return {
        "view1": batch["view1"].reshape(layout + batch["view1"].shape[1:]),
        "view2": batch["view2"].reshape(layout + batch["view2"].shape[1:]),
        "label": batch["label"].reshape(layout), "index": index
    }

  return _Batches(lambda start: sources.stream_from(source, start), examples, finish,
                  batch_size=host_batch, source=source, start=start_step * host_batch,
                  skip_corrupt=skip_corrupt)


def linear_train_batches(*, dataset, data_dir, split, batch_size, image_size, seed,
                         shuffle_buffer=10_000, skip_corrupt=False):
  """Infinite iterator of single-host linear-evaluation training batches.

  One random-resized-crop + flip view per image; yields {"image": uint8 [B, S, S, 3],
  "label": int32 [B], "mask": bool [B] (all True)}.
  """
  source = sources.source(dataset, data_dir, split, seed=seed, shuffle_buffer=shuffle_buffer,
                          skip_corrupt=skip_corrupt)
  sources.require_labels(source)
  crop_seed = seeds.of(seed, seeds.CROP)

  def examples(position, record):
    view = crops.random_views(record["image"], image_size, seeds.fold_in(crop_seed, position), 1)[0]
    return {"image": view, "label": record["label"], "position": position}

  mask = np.ones([batch_size], bool)
  return _Batches(lambda start: sources.stream_from(source, start), examples,
                  lambda batch: {**batch, "mask": mask}, batch_size=batch_size, source=source,
                  start=0, skip_corrupt=skip_corrupt)


def eval_batches(*, dataset, data_dir, split, batch_size, image_size, crop_fraction=0.875,
                 skip_corrupt=False):
  """Finite iterator over a whole split, each example once, in a fixed order (single host).

  Images are centre-cropped (`crops.center_view`). The last batch is padded to `batch_size`;
  yields {"image": uint8 [B, S, S, 3], "label": int32 [B], "mask": bool [B] (False on padding)}.
  """
  source = sources.source(dataset, data_dir, split, skip_corrupt=skip_corrupt)
  sources.require_labels(source)

  def records(start):
    return tf.data.Dataset.zip(tf.data.Dataset.range(start, source.size),
                               source.ordered().skip(start))

  def examples(position, record):
    return {
        "image": crops.center_view(record["image"], image_size, crop_fraction),
        "label": record["label"], "position": position
    }

  def finish(batch):
    n = len(batch["label"])
    pad = [(0, batch_size - n)]
    return {
        "image": np.pad(batch["image"], pad + [(0, 0)] * 3), "label": np.pad(batch["label"], pad),
        "mask": np.arange(batch_size) < n
    }

  return _Batches(records, examples, finish, batch_size=batch_size, source=source, start=0,
                  skip_corrupt=skip_corrupt, total=source.size)
