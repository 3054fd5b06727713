"""Tests of the host input pipelines, offline: mocked ImageNet, the embedded dataset, folders."""
import os

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
import pytest

# Accelerator machines have no TensorFlow: skip these host-pipeline tests there.
tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

# pylint: disable=g-import-not-at-top,wrong-import-position
from byol_jax.data import augment
from byol_jax.data import crops
from byol_jax.data import embedded
from byol_jax.data import pipeline
from byol_jax.data import seeds
from byol_jax.data import sources
from byol_jax.data import textures10

# Fake ImageNet whose examples are identified by their label (= index in the split), so tests can
# see which examples each host and each batch got.
_FAKE_SIZES = {"train": 24, "validation": 21}


def _jpeg(i):
  rng = np.random.default_rng(i)
  shape = (int(rng.integers(12, 40)), int(rng.integers(12, 40)), 3)
  return tf.io.encode_jpeg(rng.integers(0, 256, shape, dtype=np.uint8)).numpy()


def _fake_as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
  """Serves the examples of `split` (a name, slice or tfds.even_splits part) as tfds would."""
  del self, decoders, read_config, shuffle_files  # The pipeline asks for encoded images + ids.
  template = tfds.core.naming.ShardedFileTemplate(data_dir="/fake", dataset_name="imagenet2012",
                                                  filetype_suffix="tfrecord")
  splits = tfds.core.SplitDict([
      tfds.core.SplitInfo(name=name, shard_lengths=[n], num_bytes=0,
                          filename_template=template.replace(split=name))
      for name, n in _FAKE_SIZES.items()
  ])
  indices = [
      i for instruction in splits[split].file_instructions
      for i in range(instruction.skip, instruction.skip + instruction.take)
  ]
  return tf.data.Dataset.from_tensor_slices({
      "image": [_jpeg(i) for i in indices],
      "label": np.array(indices, np.int64),
      "file_name": [f"{i}.JPEG" for i in indices],
      "tfds_id": [f"imagenet2012-fake__{i}" for i in indices],
  })


@pytest.fixture(name="fake_imagenet")
def _fake_imagenet_fixture():
  with tfds.testing.mock_data(as_dataset_fn=_fake_as_dataset):
    yield


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _pretrain(**kwargs):
  args = {
      "dataset": "imagenet2012", "data_dir": None, "split": "train", "global_batch_size": 8,
      "image_size": 16, "seed": 0
  }
  return pipeline.pretrain_batches(**{**args, **kwargs})


def test_mocked_imagenet_pretrain_batches_have_the_device_layout():
  with tfds.testing.mock_data(num_examples=10):  # Random JPEGs of random sizes.
    batches = _take(_pretrain(local_device_count=2), 3)
  for batch in batches:
    assert set(batch) == {"view1", "view2", "label", "index"}
    for view in ("view1", "view2"):
      assert batch[view].shape == (2, 4, 16, 16, 3) and batch[view].dtype == np.uint8
    assert batch["label"].shape == (2, 4) and batch["label"].dtype == np.int32
    np.testing.assert_array_equal(batch["index"], np.arange(8, dtype=np.int32).reshape(2, 4))
    assert not np.array_equal(batch["view1"], batch["view2"])


# 24 examples: one chunk, or four chunks of 6 (so a resumed epoch can start inside a chunk).
@pytest.mark.parametrize("shuffle_buffer", [100, 5], ids=["one_chunk", "four_chunks"])
def test_pretrain_is_deterministic_and_resumes_exactly(fake_imagenet, shuffle_buffer):
  del fake_imagenet
  batches = _take(_pretrain(shuffle_buffer=shuffle_buffer), 7)  # 3 steps per epoch.
  for start_step in (0, 1, 4):
    resumed = _take(_pretrain(shuffle_buffer=shuffle_buffer, start_step=start_step), 7 - start_step)
    for batch, expected in zip(resumed, batches[start_step:]):
      for key in expected:
        np.testing.assert_array_equal(batch[key], expected[key])

  epochs = [np.concatenate([b["label"].ravel() for b in batches[i:i + 3]]) for i in (0, 3)]
  for order in epochs:  # Every example once per epoch, ...
    np.testing.assert_array_equal(np.sort(order), np.arange(24))
  assert not np.array_equal(epochs[0], epochs[1])  # ... in a new order each epoch,
  other_seed = np.concatenate(
      [b["label"].ravel() for b in _take(_pretrain(shuffle_buffer=shuffle_buffer, seed=1), 3)])
  assert not np.array_equal(other_seed, epochs[0])  # ... that depends on the seed.


@pytest.mark.parametrize("shuffle_buffer", [100, 4], ids=["one_chunk", "three_chunks"])
def test_hosts_read_disjoint_shards(fake_imagenet, shuffle_buffer):
  del fake_imagenet
  seen = []
  for process_index in (0, 1):
    batches = _take(
        _pretrain(process_index=process_index, process_count=2, local_device_count=2,
                  shuffle_buffer=shuffle_buffer), 3)  # One epoch of 12 per host.
    for batch in batches:
      assert batch["view1"].shape == (2, 2, 16, 16, 3)
      np.testing.assert_array_equal(batch["index"],
                                    4 * process_index + np.arange(4, dtype=np.int32).reshape(2, 2))
    seen.append(np.sort(np.concatenate([b["label"].ravel() for b in batches])))
  assert not set(seen[0]) & set(seen[1])
  np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(24))


def test_crop_min_area_reaches_the_crop_sampler(fake_imagenet, monkeypatch):
  sampler, seen = crops.random_window, []

  def recorded(shape, seed, min_area):
    seen.append(min_area)
    return sampler(shape, seed, min_area)

  monkeypatch.setattr(crops, "random_window", recorded)
  next(_pretrain(crop_min_area=0.5))
  assert seen and set(seen) == {0.5}


def test_crop_min_area_one_keeps_most_of_the_image():
  """Area 1 before clamping: with an aspect of 3/4 to 4/3, each crop keeps >= 86% of the image."""
  windows = _crop_windows(32, 32, n=200, min_area=1.0)
  area = windows[:, 2] * windows[:, 3] / 32**2
  assert area.min() >= 0.84 and area.max() == 1.0


def test_global_batch_size_must_divide_over_devices():
  with pytest.raises(
      ValueError, match=r"global_batch_size=10 is not divisible by the 8 devices "
      r"\(2 process\(es\) x 4 local devices\).* e\.g\. 8 or 16"):
    _pretrain(global_batch_size=10, process_count=2, local_device_count=4)


def test_eval_batches_cover_every_example_once(fake_imagenet):
  del fake_imagenet
  batches = list(
      pipeline.eval_batches(dataset="imagenet2012", data_dir=None, split="validation", batch_size=8,
                            image_size=16))
  assert len(batches) == 3
  for batch in batches:
    assert batch["image"].shape == (8, 16, 16, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].dtype == np.int32 and batch["mask"].dtype == bool
  mask = np.concatenate([b["mask"] for b in batches])
  assert mask.sum() == 21 and not mask[21:].any()
  labels = np.concatenate([b["label"] for b in batches])[mask]
  np.testing.assert_array_equal(np.sort(labels), np.arange(21))


def test_linear_train_batches_are_random_crops_of_labeled_examples(fake_imagenet):
  del fake_imagenet

  def batches(seed):
    return _take(
        pipeline.linear_train_batches(dataset="imagenet2012", data_dir=None, split="train",
                                      batch_size=8, image_size=16, seed=seed), 4)

  first, again, other = batches(0), batches(0), batches(1)
  for batch in first:
    assert batch["image"].shape == (8, 16, 16, 3) and batch["mask"].all()
  np.testing.assert_array_equal(first[3]["image"], again[3]["image"])
  assert not np.array_equal(first[0]["image"], other[0]["image"])


def test_not_prepared_datasets_say_how_to_prepare_them(tmp_path):
  with pytest.raises(sources.DatasetNotFoundError, match="cifar10") as error:
    _pretrain(dataset="cifar10", data_dir=str(tmp_path))
  assert str(tmp_path) in str(error.value) and "tfds build cifar10" in str(error.value)
  with pytest.raises(sources.DatasetNotFoundError, match="manual"):
    sources.dataset_info("imagenet2012", str(tmp_path))
  with pytest.raises(ValueError, match="Unknown dataset"):
    sources.dataset_info("no_such_dataset", str(tmp_path))


def test_embedded_dataset_generates_itself_and_loads_offline(shapes10_dir):
  info = sources.dataset_info(embedded.NAME, shapes10_dir)
  assert info == sources.DatasetInfo(10_000, 10, "train", "train", "test")
  assert os.path.isdir(os.path.join(shapes10_dir, embedded.NAME))
  batches = list(
      pipeline.eval_batches(dataset=embedded.NAME, data_dir=shapes10_dir, split="test",
                            batch_size=512, image_size=32))
  labels = np.concatenate([b["label"][b["mask"]] for b in batches])
  np.testing.assert_array_equal(np.bincount(labels), [200] * 10)
  batch = next(
      pipeline.pretrain_batches(dataset=embedded.NAME, data_dir=shapes10_dir,
                                split=info.pretrain_split, global_batch_size=16, image_size=24,
                                seed=0, local_device_count=4))
  assert batch["view1"].shape == (4, 4, 24, 24, 3) and (batch["label"] >= 0).all()


def test_embedded_colors_carry_no_label():
  """One uniformly random hue per image, whatever the shape, and the shape in the opposite hue.

  So colour tells no class, and a hue shift of the whole image (the colour jitter) keeps the two
  colours' relation.
  """
  images, labels = embedded.generate(2000, seed=0)
  hsv = np.asarray(augment.rgb_to_hsv(images.reshape(len(images), -1, 3).astype(np.float32) / 255))
  order = np.argsort(hsv[..., 2], axis=1)  # By value: the shape is brighter than its background.
  darkest, brightest = order[:, :50], order[:, -20:]

  def mean_hue(pixels):  # Circular mean over each image's chosen pixels, in turns.
    angles = 2 * np.pi * np.take_along_axis(hsv[..., 0], pixels, axis=1)
    return np.mod(np.arctan2(np.sin(angles).mean(1), np.cos(angles).mean(1)) / (2 * np.pi), 1.0)

  background_hue, shape_hue = mean_hue(darkest), mean_hue(brightest)
  for label in range(len(embedded.CLASS_NAMES)):
    angles = 2 * np.pi * background_hue[labels == label]
    # The mean resultant length of a class's hues: about 1 / sqrt(200) = 0.07 when uniform, 1 if
    # the class had one hue.
    assert np.hypot(np.cos(angles).mean(), np.sin(angles).mean()) < 0.2
  gap = np.abs(np.mod(shape_hue - background_hue, 1.0) - 0.5)
  assert np.median(gap) < 0.05, np.median(gap)


def test_textures_colours_carry_no_label_and_generation_repeats():
  """Each image's darker colour has a uniformly random hue whatever the texture, every class is
  drawn equally often, and a seed gives the same images again."""
  images, labels = textures10.generate(1000, seed=3)
  np.testing.assert_array_equal(np.bincount(labels), [100] * 10)
  again, _ = textures10.generate(1000, seed=3)
  np.testing.assert_array_equal(images, again)
  hsv = np.asarray(augment.rgb_to_hsv(images.reshape(len(images), -1, 3).astype(np.float32) / 255))
  darkest = np.argsort(hsv[..., 2], axis=1)[:, :30]
  angles = 2 * np.pi * np.take_along_axis(hsv[..., 0], darkest, axis=1)
  dark_hue = np.arctan2(np.sin(angles).mean(1), np.cos(angles).mean(1))
  for label in range(len(textures10.CLASS_NAMES)):
    chosen = dark_hue[labels == label]
    # Mean resultant length: about 1 / sqrt(100) = 0.1 when uniform, 1 if the class had one hue.
    assert np.hypot(np.cos(chosen).mean(), np.sin(chosen).mean()) < 0.3


@pytest.mark.slow  # Generates textures10's 14,000 images (about 20 s).
def test_textures_generate_themselves_and_load_offline(tmp_path):
  info = sources.dataset_info(textures10.NAME, str(tmp_path))
  assert info == sources.DatasetInfo(10_000, 10, "train", "train", "test")
  batches = list(
      pipeline.eval_batches(dataset=textures10.NAME, data_dir=str(tmp_path), split="validation",
                            batch_size=500, image_size=32))
  labels = np.concatenate([b["label"][b["mask"]] for b in batches])
  np.testing.assert_array_equal(np.bincount(labels), [200] * 10)
  # The records hold the generated images, in tfds' own order.
  stored = tfds.as_numpy(tfds.builder(textures10.NAME, data_dir=str(tmp_path)).as_dataset("test"))
  seed = textures10._SPLIT_SEEDS["test"]  # pylint: disable=protected-access
  generated, _ = textures10.generate(2000, seed)
  assert sorted(r["image"].tobytes() for r in stored) == sorted(map(np.ndarray.tobytes, generated))


def _write_images(folder, names, size=(20, 28)):
  os.makedirs(folder, exist_ok=True)
  for i, name in enumerate(names):
    image = np.random.default_rng(i).integers(0, 256, size + (3,), dtype=np.uint8)
    encode = tf.io.encode_jpeg if name.endswith(".jpg") else tf.io.encode_png
    tf.io.write_file(os.path.join(folder, name), encode(image))


def test_labeled_folder_dataset(tmp_path):
  _write_images(tmp_path / "cat", [f"{i}.png" for i in range(6)])
  _write_images(tmp_path / "dog", [f"{i}.jpg" for i in range(4)])
  (tmp_path / "notes.txt").write_text("not an image")
  dataset = f"folder:{tmp_path}"
  info = sources.dataset_info(dataset, None)
  assert info == sources.DatasetInfo(9, 2, "all[:90%]", "all[:90%]", "all[90%:]")

  batches = _take(_pretrain(dataset=dataset, split=info.pretrain_split, local_device_count=2), 4)
  assert batches[0]["view1"].shape == (2, 4, 16, 16, 3)
  assert set(np.concatenate([b["label"].ravel() for b in batches])) == {0, 1}
  resumed = next(
      _pretrain(dataset=dataset, split=info.pretrain_split, local_device_count=2,
                start_step=3))  # Inside the fourth epoch of 9 images.
  for key in resumed:
    np.testing.assert_array_equal(resumed[key], batches[3][key])
  batches = list(
      pipeline.eval_batches(dataset=dataset, data_dir=None, split="all", batch_size=4,
                            image_size=16))
  labels = np.concatenate([b["label"][b["mask"]] for b in batches])
  np.testing.assert_array_equal(np.bincount(labels), [6, 4])
  test = list(
      pipeline.eval_batches(dataset=dataset, data_dir=None, split=info.test_split, batch_size=4,
                            image_size=16))
  assert sum(b["mask"].sum() for b in test) == 1


def test_flat_folder_is_for_pretraining_only(tmp_path):
  _write_images(tmp_path, ["a.png", "b.jpg", "c.png"])
  dataset = f"folder:{tmp_path}"
  assert sources.dataset_info(dataset, None) == sources.DatasetInfo(3, 0, "all", None, None)
  batch = next(_pretrain(dataset=dataset, split="all", global_batch_size=4))
  np.testing.assert_array_equal(batch["label"], -1)
  with pytest.raises(ValueError, match="pretraining only"):
    pipeline.eval_batches(dataset=dataset, data_dir=None, split="all", batch_size=2, image_size=16)


def test_corrupt_image_is_named_or_skipped_and_counted(tmp_path):
  _write_images(tmp_path / "a", ["0.png", "1.jpg", "2.png"])
  _write_images(tmp_path / "b", ["3.png", "4.png"])
  bad = tmp_path / "b" / "broken.jpg"
  # A JPEG frame header (16x16, 3 components) passes the up-front check; what follows does not
  # decode.
  bad.write_bytes(b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x10\x00\x10\x03\x01\x22\x00\x02\x11\x01"
                  b"\x03\x11\x01 this is not a JPEG")
  dataset = f"folder:{tmp_path}"

  with pytest.raises(sources.CorruptImageError, match="broken.jpg"):
    _take(_pretrain(dataset=dataset, split="all", global_batch_size=2), 3)
  with pytest.raises(sources.CorruptImageError, match=str(bad)):
    list(
        pipeline.eval_batches(dataset=dataset, data_dir=None, split="all", batch_size=4,
                              image_size=16))

  iterator = pipeline.eval_batches(dataset=dataset, data_dir=None, split="all", batch_size=4,
                                   image_size=16, skip_corrupt=True)
  batches = list(iterator)
  assert sum(b["mask"].sum() for b in batches) == 5 and iterator.num_skipped == 1
  iterator = _pretrain(dataset=dataset, split="all", global_batch_size=2, skip_corrupt=True)
  _take(iterator, 6)  # Two epochs of five good images.
  assert iterator.num_skipped >= 1


def test_folder_files_that_are_not_images_are_found_up_front(tmp_path):
  _write_images(tmp_path / "a", ["0.png", "1.jpg", "2.png"])
  _write_images(tmp_path / "b", ["3.png"])
  (tmp_path / "b" / "empty.png").write_bytes(b"")
  (tmp_path / "a" / "text.jpg").write_text("a text file, named .jpg")
  dataset = f"folder:{tmp_path}"
  with pytest.raises(sources.CorruptImageError, match=r"2 of the 6 files .*empty\.png") as info:
    sources.dataset_info(dataset, None)
  assert "text.jpg" in str(info.value) and "skip_corrupt_images=true" in str(info.value)
  info = sources.dataset_info(dataset, None, skip_corrupt=True)
  assert (info.num_left_out, info.num_classes) == (2, 2)
  batches = list(
      pipeline.eval_batches(dataset=dataset, data_dir=None, split="all", batch_size=4,
                            image_size=16, skip_corrupt=True))
  assert sum(b["mask"].sum() for b in batches) == 4


def _crop_windows(height, width, *, n, min_area):
  """[n, 4] windows (y, x, h, w) of the pipeline's crop sampler, one seed per draw."""
  shape = tf.constant([height, width, 3])
  sampler, seed = crops.random_window, seeds.of
  windows = tf.data.Dataset.range(n).map(lambda i: sampler(shape, seed(7, i), min_area))
  return np.stack(list(windows.as_numpy_iterator()))


def _official_crop_sizes(height, width, n, rng, min_area=0.08):
  """(h, w) of the official BYOL random-resized crop, written out from its formula."""
  area = rng.uniform(min_area, 1.0, n) * height * width
  ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3), n))
  w = np.minimum(np.round(np.sqrt(area * ratio)), width)
  h = np.minimum(np.round(np.sqrt(area / ratio)), height)
  return h, w


def _ks_distance(a, b):
  """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
  grid = np.sort(np.concatenate([a, b]))
  cdf = lambda x: np.searchsorted(np.sort(x), grid, side="right") / len(x)
  return np.max(np.abs(cdf(a) - cdf(b)))


@pytest.mark.parametrize("height,width", [(375, 500), (32, 32)])
def test_crop_sampler_draws_the_official_area_and_aspect_distributions(height, width):
  n = 3000
  y, x, h, w = _crop_windows(height, width, n=n, min_area=0.08).T
  assert np.all((y >= 0) & (x >= 0) & (h >= 1) & (w >= 1))
  assert np.all((y + h <= height) & (x + w <= width))
  want_h, want_w = _official_crop_sizes(height, width, 200_000, np.random.default_rng(0))
  area, want_area = h * w / (height * width), want_h * want_w / (height * width)
  # With 3000 draws, a KS distance above 0.04 has p < 0.001 under the same distribution.
  assert _ks_distance(area, want_area) < 0.04
  assert _ks_distance(np.log(w / h), np.log(want_w / want_h)) < 0.04
  assert abs(area.mean() - want_area.mean()) < 0.02
  # Offsets are uniform over the free room: about half of it on average.
  free_y, free_x = height - h, width - w
  assert abs(np.mean(y[free_y > 0] / free_y[free_y > 0]) - 0.5) < 0.03
  assert abs(np.mean(x[free_x > 0] / free_x[free_x > 0]) - 0.5) < 0.03


@settings(max_examples=40, deadline=None)
@given(height=st.integers(1, 600), width=st.integers(1, 600), min_area=st.floats(0.01, 1.0),
       seed=st.integers(0, 2**31 - 1))
def test_crop_window_lies_inside_any_image(height, width, min_area, seed):
  """Beyond the two images above: every window is at least 1x1 and inside the image."""
  y, x, h, w = crops.random_window(tf.constant([height, width, 3]), seeds.of(seed, 0),
                                   min_area).numpy()
  assert 0 <= y and 0 <= x and 1 <= h and 1 <= w
  assert y + h <= height and x + w <= width


def test_folder_split_is_sliced_by_tfds_rules_and_bad_slices_are_named():
  """The folder's "all" is sliced by tfds itself: its rounding and its range errors."""
  assert sources._slice_bounds("all", 10) == (0, 10)  # pylint: disable=protected-access
  assert sources._slice_bounds("all[25%:80%]", 10) == (2, 8)  # pylint: disable=protected-access
  assert sources._slice_bounds("all[3:-2]", 10) == (3, 8)  # pylint: disable=protected-access
  for bad in ("all[:11]", "train[:5]", "all[1:2]+all[3:4]", "all[::2]"):
    with pytest.raises(sources.DatasetError, match="folder"):
      sources._slice_bounds(bad, 10)  # pylint: disable=protected-access
