"""What the generated datasets (shapes10, textures10) share: balanced seeded draws, a builder."""
import numpy as np
import tensorflow_datasets as tfds


def generate(draw, num_classes, num_examples, seed, chunk):
  """`num_examples` images (uint8 [N, H, W, 3]) and balanced labels (int64 [N]): draw(labels, rng)
  gives float images in [0, 1] for `chunk` labels at a time, to bound memory."""
  rng = np.random.default_rng(seed)
  labels = rng.permutation(np.arange(num_examples) % num_classes).astype(np.int64)
  images = np.concatenate(
      [draw(labels[start:start + chunk], rng) for start in range(0, num_examples, chunk)])
  return np.round(images * 255).astype(np.uint8), labels


class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """tfds builder of a generated dataset: `download_and_prepare` generates it, offline.

  A subclass sets the dataset's VERSION, RELEASE_NOTES, DESCRIPTION, IMAGE_SIZE, CLASS_NAMES,
  SPLIT_SIZES, SPLIT_SEEDS and generate(num_examples, seed).
  """
  # No files (checksums, metadata) live beside these builders. Saying so also keeps tfds 4.9.10 from
  # resolving the source folder through importlib_resources, which it imports but does not require.
  code_path = None

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict({
            "image":
                tfds.features.Image(shape=(self.IMAGE_SIZE, self.IMAGE_SIZE, 3),
                                    encoding_format="png"),
            "label":
                tfds.features.ClassLabel(names=self.CLASS_NAMES),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(split) for split in self.SPLIT_SIZES}

  def _generate_examples(self, split):
    images, labels = self.generate(self.SPLIT_SIZES[split], self.SPLIT_SEEDS[split])
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {"image": image, "label": label}
