"""Linear evaluation: a linear classifier trained on frozen encoder features.

The BYOL protocol, as the official code runs it: raw features, a linear layer with Haiku's default
init (truncated normal, std 1 / sqrt(D)), SGD with Nesterov momentum 0.9, no weight decay, a cosine
learning-rate decay, random crop + flip train views, centre-crop test views.

`standardize_features=True` adds one step: each feature dimension is standardised with the mean and
standard deviation of one pass over the train views, computed before training and then held fixed.
Feature scales differ by orders of magnitude between BN, GN+WS and unnormalised encoders, and the
paper picked the learning rate per model on a validation set; standardising lets one learning rate
fit them all. It is an affine map of the inputs, so the best linear classifier it can reach is
unchanged; only the optimisation is better conditioned. The variance gets a small floor, so
dimensions that barely vary (a collapsed encoder) are not blown up.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

_VARIANCE_FLOOR = 1e-6


def extract_features(embed_fn, batches) -> tuple[np.ndarray, np.ndarray]:
  """Features and labels of the unmasked examples of a finite batch iterator."""
  features, labels = [], []
  for batch in batches:
    mask = np.asarray(batch["mask"], bool)
    features.append(np.asarray(embed_fn(batch["image"]), np.float32)[mask])
    labels.append(np.asarray(batch["label"])[mask])
  if not features:
    raise ValueError("extract_features got no batches.")
  return np.concatenate(features), np.concatenate(labels)


@jax.jit
def _shifted_sums(features, mask, shift):
  """Masked sums of (x - shift) and its square; the shift keeps them precise."""
  centered = jnp.where(mask[:, None], features - shift, 0.)
  return centered.sum(0), jnp.square(centered).sum(0)


def _feature_statistics(embed_fn, train_batches, num_steps):
  """Per-dimension mean and 1/std of the features over `num_steps` batches."""
  batch = next(train_batches)
  features, mask = embed_fn(batch["image"]), np.asarray(batch["mask"], bool)
  shift = np.asarray(features, np.float64)[mask].mean(0).astype(np.float32)
  sums, counts = [_shifted_sums(features, mask, shift)], [mask.sum()]
  for _ in range(num_steps - 1):
    batch = next(train_batches)
    mask = np.asarray(batch["mask"], bool)
    sums.append(_shifted_sums(embed_fn(batch["image"]), mask, shift))
    counts.append(mask.sum())
  sums = np.asarray(jax.device_get(sums), np.float64)  # [steps, 2, D]
  count = max(int(np.sum(counts)), 1)
  mean_shifted = sums[:, 0].sum(0) / count
  variance = np.maximum(sums[:, 1].sum(0) / count - mean_shifted**2, 0.)
  mean = shift + mean_shifted
  return (mean.astype(np.float32), (1 / np.sqrt(variance + _VARIANCE_FLOOR)).astype(np.float32))


def _logits(params, features, mean, inv_std):
  return ((features - mean) * inv_std) @ params["w"] + params["b"]


def _make_train_step(optimizer):
  """One SGD step on the masked mean cross-entropy; returns correct counts."""

  @jax.jit
  def step(params, opt_state, features, labels, mask, mean, inv_std):
    labels = jnp.where(mask, labels, 0)

    def loss_fn(p):
      logits = _logits(p, features, mean, inv_std)
      losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      loss = jnp.where(mask, losses, 0.).sum() / jnp.maximum(mask.sum(), 1)
      return loss, logits

    grads, logits = jax.grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    correct = jnp.sum((jnp.argmax(logits, -1) == labels) & mask)
    return optax.apply_updates(params, updates), opt_state, correct

  return step


@functools.partial(jax.jit, static_argnames="top")
def _test_counts(params, features, labels, mask, mean, inv_std, *, top):
  """Masked counts of top-1 and top-`top` hits in one batch."""
  logits = _logits(params, features, mean, inv_std)
  _, best = jax.lax.top_k(logits, top)
  hits = best == labels[:, None]
  return jnp.sum(hits[:, 0] & mask), jnp.sum(hits.any(-1) & mask)


def linear_learning_rate(base_lr, batch_size):
  """The linear classifier's peak learning rate, base_lr x batch/256 (official: 0.2)."""
  return base_lr * batch_size / 256


def linear_evaluation(embed_fn, train_batches, test_batches, *, num_classes, epochs,
                      steps_per_epoch, learning_rate, standardize_features=False,
                      seed=0) -> dict[str, float]:
  """Trains a linear classifier on frozen features and tests it.

  Args:
    embed_fn: frozen encoder, uint8 images [B, H, W, 3] -> features [B, D].
    train_batches: infinite iterator of {"image", "label", "mask"} dicts of
      augmented train views.
    test_batches: callable returning a fresh finite iterator of test batches
      (the last one padded, with mask False on the padding).
    num_classes: number of classes.
    epochs: training epochs, each of `steps_per_epoch` batches.
    steps_per_epoch: batches per epoch.
    learning_rate: peak learning rate of the cosine schedule (see
      `linear_learning_rate`).
    standardize_features: standardise the features with fixed statistics of
      one extra epoch of train batches (see the module docstring).
    seed: seed of the classifier's initial weights.

  Returns:
    {"top1", "top5" (if num_classes >= 5), "train_top1"}: test accuracies, and
    the accuracy on the train views during the last epoch. Masked examples
    never count.
  """
  if standardize_features:
    mean, inv_std = _feature_statistics(embed_fn, train_batches, steps_per_epoch)
  else:
    feature_dim = jax.eval_shape(embed_fn, next(iter(test_batches()))["image"]).shape[-1]
    mean, inv_std = np.zeros(feature_dim, np.float32), np.ones(feature_dim, np.float32)
  feature_dim = mean.shape[0]
  params = {  # hk.Linear's default init.
      "w": jax.random.truncated_normal(jax.random.PRNGKey(seed), -2.0, 2.0,
                                       (feature_dim, num_classes)) / np.sqrt(feature_dim),
      "b": jnp.zeros((num_classes,)),
  }
  total_steps = epochs * steps_per_epoch
  optimizer = optax.sgd(optax.cosine_decay_schedule(learning_rate, total_steps), momentum=0.9,
                        nesterov=True)
  opt_state = optimizer.init(params)
  train_step = _make_train_step(optimizer)

  train_correct, train_count = 0, 0
  for i in range(total_steps):
    batch = next(train_batches)
    mask = jnp.asarray(batch["mask"], bool)
    params, opt_state, correct = train_step(params, opt_state, embed_fn(batch["image"]),
                                            batch["label"], mask, mean, inv_std)
    if i >= total_steps - steps_per_epoch:
      train_correct += correct
      train_count += mask.sum()

  top = min(5, num_classes)
  top1, topk, count = 0, 0, 0
  for batch in test_batches():
    mask = jnp.asarray(batch["mask"], bool)
    hits1, hitsk = _test_counts(params, embed_fn(batch["image"]), jnp.asarray(batch["label"]), mask,
                                mean, inv_std, top=top)
    top1, topk, count = top1 + hits1, topk + hitsk, count + mask.sum()
  train_correct, train_count, top1, topk, count = jax.device_get(
      (train_correct, train_count, top1, topk, count))
  if count == 0:
    raise ValueError("linear_evaluation got no unmasked test examples.")
  results = {"top1": float(top1 / count), "train_top1": float(train_correct / max(train_count, 1))}
  if num_classes >= 5:
    results["top5"] = float(topk / count)
  return results
