r"""How far a CPU-scale encoder can get on a generated dataset with labels, and where a random one
starts.

    python -m experiments.reproduction.supervised_bound --config=configs/byol.py:tiny \
        [--steps=312] [--config.dataset=textures10] [--split=validation] [--floor]

Trains the config's encoder (BN in training mode, as BYOL's online network) with a linear head
and cross-entropy on the labels, for as many steps and the same batch as the config's BYOL run
(Adam, lr 1e-3, random flips and shifts), and prints its top-1 on --split (the validation split
unless a final table asks for the test split). With --floor it also
prints the tiny protocol's linear and kNN top-1 of the same encoder at random init, as every
BYOL run evaluates its step-0 encoder (this script's draw of the weights differs from a run's).
A dataset change is worth a BYOL run only when the first is high and the second low.
"""
from absl import app
from absl import flags
import haiku as hk
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np
import optax

from byol_jax import config as config_lib
from byol_jax import model
from byol_jax import train
from byol_jax.data import augment
from byol_jax.data import embedded
from byol_jax.data import textures10
from byol_jax.evaluation import protocol

_CONFIG = config_flags.DEFINE_config_file("config", None, "A BYOL config with its preset.")
_STEPS = flags.DEFINE_integer("steps", None, "Training steps; default: the config's BYOL run's.")
_FLOOR = flags.DEFINE_bool("floor", False, "Also evaluate the random-init encoder.")
_SPLIT = flags.DEFINE_string("split", "validation", "The split the top-1 is read on.")
_GENERATORS = {embedded.NAME: embedded, textures10.NAME: textures10}


def _augment(images, rng):
  """Random horizontal flips and shifts of up to 4 px (zero padding), in numpy."""
  n, size = images.shape[:2]
  flip = rng.random(n) < 0.5
  images = np.where(flip[:, None, None, None], images[:, :, ::-1], images)
  padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
  dx, dy = rng.integers(0, 9, n), rng.integers(0, 9, n)
  return np.stack([padded[i, dy[i]:dy[i] + size, dx[i]:dx[i] + size] for i in range(n)])


def main(argv):
  del argv
  c = _CONFIG.value
  data = _GENERATORS[c.dataset]
  seeds = data._SPLIT_SEEDS  # pylint: disable=protected-access
  train_x, train_y = data.generate(data.SPLIT_SIZES["train"], seeds["train"])
  test_x, test_y = data.generate(data.SPLIT_SIZES[_SPLIT.value], seeds[_SPLIT.value])
  steps = _STEPS.value if _STEPS.value is not None else (c.max_steps or
                                                         c.epochs * len(train_x) // c.batch_size)
  c.bn_cross_replica = False  # One device, no mapped axis: the batch's own statistics.
  encoder = model.encoder_fn(c)

  def forward(images, is_training):
    features = encoder(augment.normalize(images), is_training).astype(jnp.float32)
    return hk.Linear(len(data.CLASS_NAMES), name="head")(features)

  net = hk.transform_with_state(forward)
  # As a BYOL run's step 0: BN's moving averages reset, so evaluation-mode BN is the identity.
  params, state = train.init_network(net, jax.random.PRNGKey(config_lib.weights_seed(c)),
                                     train_x[:2])
  if _FLOOR.value:
    c.eval.test_split = _SPLIT.value
    floor = protocol.evaluate_features(model.make_embed_fn(c, params, state), dataset=c.dataset,
                                       data_dir=c.data_dir, image_size=c.image_size,
                                       eval_config=c.eval, seed=c.seed)
    print(f"random init: linear top-1 {floor['top1']:.3f}, kNN top-1 {floor['knn_top1']:.3f}")
  optimizer = optax.adam(1e-3)
  opt_state = optimizer.init(params)

  @jax.jit
  def step(params, state, opt_state, images, labels):

    def loss_fn(p):
      logits, new_state = net.apply(p, state, None, images, True)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), new_state

    (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), state, opt_state, loss

  @jax.jit
  def predict(params, state, images):
    return jnp.argmax(net.apply(params, state, None, images, False)[0], -1)

  rng = np.random.default_rng(c.seed)
  for i in range(steps):
    chosen = rng.choice(len(train_x), c.batch_size, replace=False)
    params, state, opt_state, loss = step(params, state, opt_state, _augment(train_x[chosen], rng),
                                          train_y[chosen])
    if (i + 1) % 100 == 0:
      print(f"step {i + 1}: loss {float(loss):.3f}", flush=True)
  correct = sum(
      int((predict(params, state, test_x[s:s + 500]) == test_y[s:s + 500]).sum())
      for s in range(0, len(test_x), 500))
  print(f"supervised ({steps} steps, batch {c.batch_size}): {_SPLIT.value} top-1 "
        f"{correct / len(test_x):.3f}")


if __name__ == "__main__":
  app.run(main)
