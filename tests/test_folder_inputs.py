"""Image folders as a careless or hostile user leaves them: links, loops, split folders, empty
classes, huge or rotated images, odd names, flaky reads. Each is read right or refused by name."""
import os

import numpy as np
from PIL import Image
from PIL import ImageOps
import pytest
import tensorflow as tf

from byol_jax.data import pipeline
from byol_jax.data import sources


def _write(folder, names, size=(20, 28)):
  os.makedirs(folder, exist_ok=True)
  for i, name in enumerate(names):
    image = np.random.default_rng(i).integers(0, 256, size + (3,), dtype=np.uint8)
    Image.fromarray(image).save(os.path.join(folder, name))


def _info(path, **kwargs):
  sources._list_folder.cache_clear()  # pylint: disable=protected-access
  return sources.dataset_info(f"folder:{path}", None, **kwargs)


def test_links_are_followed_once_and_a_loop_is_reported(tmp_path, caplog):
  _write(tmp_path / "a", ["0.png", "1.png", "2.png"])
  _write(tmp_path / "b", ["3.png", "4.png", "5.png"])
  os.symlink("..", tmp_path / "b" / "loop")  # b/loop/a/0.png would be class a's image as b.
  os.symlink(tmp_path / "a" / "0.png", tmp_path / "a" / "again.png")
  info = _info(tmp_path)
  assert (info.num_classes, info.num_train_examples + 1) == (2, 6)  # 90% of 6, rounded.
  assert "reached twice through links were read once" in caplog.text and "loop" in caplog.text


def test_one_file_under_two_classes_is_refused(tmp_path):
  _write(tmp_path / "a", ["0.png", "1.png"])
  _write(tmp_path / "b", ["2.png"])
  os.symlink(tmp_path / "a" / "0.png", tmp_path / "b" / "0.png")
  with pytest.raises(sources.DatasetError, match="same file under two classes"):
    _info(tmp_path)


def test_split_folders_and_empty_classes_are_refused_with_the_fix(tmp_path):
  _write(tmp_path / "train" / "cat", ["0.png"])
  _write(tmp_path / "val" / "cat", ["1.png"])
  with pytest.raises(sources.DatasetError, match=r"look like splits.*folder:.*/train"):
    _info(tmp_path)
  _write(tmp_path / "train" / "dog", ["2.png"])
  os.makedirs(tmp_path / "train" / "bird")
  with pytest.raises(sources.DatasetError, match=r"Class folders \['bird'\] .* hold no images"):
    _info(tmp_path / "train")


def test_unread_formats_are_reported_by_extension(tmp_path, caplog):
  _write(tmp_path / "a", ["0.png", "1.webp", "2.tif"])
  _write(tmp_path / "b", ["3.png"])
  assert _info(tmp_path).num_classes == 2
  assert "2 file(s) that are not JPEG, PNG, GIF or BMP were not read" in caplog.text
  assert ".tif 1, .webp 1" in caplog.text


def test_a_huge_image_is_refused_from_its_header_before_any_decoding(tmp_path):
  _write(tmp_path / "a", ["0.png", "1.jpg", "2.gif", "3.bmp"], size=(30, 50))
  sources._list_folder.cache_clear()  # pylint: disable=protected-access
  files, _, headers, _, _ = sources._list_folder(str(tmp_path))  # pylint: disable=protected-access
  assert {(h.width, h.height) for h in headers} == {(50, 30)}
  assert len(files) == 4
  # A PNG that claims 16000 x 16000 pixels: only its header is ever read.
  huge = tf.io.encode_png(np.zeros((1, 1, 3), np.uint8)).numpy()
  huge = huge[:16] + (16000).to_bytes(4, "big") * 2 + huge[24:]
  (tmp_path / "a" / "huge.png").write_bytes(huge)
  with pytest.raises(sources.DatasetError, match=r"huge\.png \(16000x16000\).*max_image_pixels"):
    _info(tmp_path, max_pixels=50_000_000)
  assert _info(tmp_path, max_pixels=16000**2).num_classes == 1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pillow_applies_it(tmp_path, orientation):
  blocks = np.kron(np.arange(12).reshape(3, 4, 1) * 20, np.ones((8, 10, 3))).astype(np.uint8)
  blocks[..., 1] = 255 - blocks[..., 1]  # 24 x 40 pixels of distinct 8 x 10 blocks.
  exif = Image.Exif()
  exif[0x0112] = orientation
  os.makedirs(tmp_path / "a")
  path = tmp_path / "a" / "photo.jpg"
  Image.fromarray(blocks).save(path, exif=exif, quality=95)
  _write(tmp_path / "b", ["other.png"])
  upright = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
  sources._list_folder.cache_clear()  # pylint: disable=protected-access
  batches = pipeline.eval_batches(dataset=f"folder:{tmp_path}", data_dir=None, split="all",
                                  batch_size=2, image_size=24, crop_fraction=1.0)
  images = np.concatenate([b["image"][b["mask"]] for b in batches])
  h, w = upright.shape[:2]
  y, x = (h - 24 + 1) // 2, (w - 24 + 1) // 2
  expected = upright[y:y + 24, x:x + 24].astype(int)
  errors = [np.abs(image.astype(int) - expected).mean() for image in images]
  assert min(errors) < 3, errors  # A wrong turn puts other blocks there: errors of tens.


def test_a_file_name_that_is_not_utf8_is_read(tmp_path):
  _write(tmp_path / "a", ["0.png"])
  _write(tmp_path / "b", ["1.png"])
  odd = os.path.join(os.fsencode(tmp_path / "a"), b"caf\xe9.png")
  os.rename(os.fsencode(tmp_path / "a" / "0.png"), odd)
  sources._list_folder.cache_clear()  # pylint: disable=protected-access
  batches = list(
      pipeline.eval_batches(dataset=f"folder:{tmp_path}", data_dir=None, split="all", batch_size=2,
                            image_size=16))
  assert sum(b["mask"].sum() for b in batches) == 2


def test_a_read_error_is_retried_then_named_not_taken_for_a_bad_image(tmp_path, monkeypatch):
  _write(tmp_path / "a", ["0.png"])
  _write(tmp_path / "b", ["1.png"])
  monkeypatch.setattr(sources.time, "sleep", lambda s: None)
  real_open, failures = tf.io.gfile.GFile, {"left": 2}

  def flaky(path, mode="r"):
    if failures["left"] and os.fsdecode(path).endswith("0.png"):
      failures["left"] -= 1
      raise tf.errors.UnavailableError(None, None, "the store hiccuped")
    return real_open(path, mode)

  monkeypatch.setattr(tf.io.gfile, "GFile", flaky)
  assert _info(tmp_path).num_classes == 2  # Two failures, then a good read.
  failures["left"] = 10
  with pytest.raises(sources.DatasetError, match=r"Cannot read .*0\.png.*the store hiccuped"):
    _info(tmp_path)
