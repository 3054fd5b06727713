"""The train state, the per-replica update of BYOL and SimCLR, and its mapping over devices.

`per_replica_update` is written once for one replica's slice of the global batch. Every reduction
that must span the global batch (gradient mean, cross-replica BN statistics, SimCLR negatives,
metrics) names the mapped axis `model.AXIS`; `jax.pmap` over the local devices of every host then
spans all devices of all hosts. One device with batch B and N devices with B/N each give the same
numbers.

Target network and BN: the target is an EMA of the online parameters,
xi <- tau xi + (1 - tau) theta, leaf by leaf, in the same step. As in the official BYOL code, the
target runs its BN layers in training mode on its own views (batch statistics, never the online
network's), and its BN moving averages are updated by its own forward passes, not averaged from
the online network's. Those moving averages are used only if the target itself is evaluated;
evaluation uses the online encoder.
"""
from typing import Any, Callable, NamedTuple, Optional

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

from byol_jax import cpu_speed
from byol_jax import config as config_lib
from byol_jax import losses
from byol_jax import model
from byol_jax import optim
from byol_jax.data import augment


class TrainState(NamedTuple):
  """Everything a step reads and writes. Target fields are None for SimCLR, probe fields None
  when the data has no labels (an unlabelled image folder)."""
  step: Any
  online_params: hk.Params
  online_state: hk.State
  target_params: Optional[hk.Params]
  target_state: Optional[hk.State]
  opt_state: optax.OptState
  probe_params: hk.Params
  probe_opt_state: optax.OptState


class Method(NamedTuple):
  """What BYOL and SimCLR differ in, decided once from config.method.

  `has_target`: a target network, the EMA of the online one, gives the regression targets (BYOL);
  SimCLR's state has no target. `loss(outputs, targets)`: the loss of the online network's outputs
  of both views, given the target's (None without a target).
  """
  has_target: bool
  loss: Callable[..., Any]


def method_of(config):
  if config.method == "byol":

    def byol(outputs, targets):
      return losses.byol_loss(outputs[0]["prediction"], outputs[1]["prediction"],
                              targets[0]["projection"], targets[1]["projection"])

    return Method(has_target=True, loss=byol)

  def simclr(outputs, targets):
    del targets  # The other view of each image is the positive, the rest of the batch negatives.
    return losses.infonce_loss(outputs[0]["projection"], outputs[1]["projection"],
                               config.temperature, axis_name=model.AXIS)

  return Method(has_target=False, loss=simclr)


class Schedules(NamedTuple):
  learning_rate: Any
  tau: Any


def make_schedules(config, steps_per_epoch):
  total = total_steps(config, steps_per_epoch)
  return Schedules(
      learning_rate=optim.learning_rate_schedule(
          base_lr=config.base_lr, batch_size=config.batch_size, total_steps=total,
          warmup_steps=int(round(config.warmup_epochs * steps_per_epoch))),
      tau=optim.tau_schedule(tau_base=config.tau_base, total_steps=total)
      if method_of(config).has_target else None)


def total_steps(config, steps_per_epoch):
  return config.max_steps or config.epochs * steps_per_epoch


def make_optimizers(config, schedules):
  return (optim.lars(schedules.learning_rate, weight_decay=config.weight_decay,
                     momentum=config.momentum, trust_coefficient=config.trust_coefficient,
                     adapt_biases_and_norms=config.lars_adapt_biases_and_norms),
          optax.adam(config.probe_lr))


def _untrained_bn_state(state):
  """BN moving averages before any step: mean 0, variance 1, EMA counters and accumulators 0.

  Haiku's init runs one training-mode pass that already folds the dummy batch into the averages;
  resetting them makes evaluation-mode BN of an untrained network the identity (as in PyTorch),
  and the first training step then starts the zero-debiased averages from scratch.
  """

  def reset(path, value):
    module, name = path[0].key, path[1].key
    if module.endswith("/~/var_ema") and name == "average":
      return jnp.ones_like(value)
    return jnp.zeros_like(value)

  return jax.tree_util.tree_map_with_path(reset, state)


def init_network(network, rng, images):
  """(params, state) of a transformed network, BN's averages untrained; one program, as op by op
  the init of a ResNet is slow, and in it the init's forward pass compiles away."""
  return cpu_speed.jit_once(_network_init(network))(rng, images)


def _network_init(network):
  """init(rng, images) -> (params, state), unjitted.

  BN can only be initialised in training mode, which with cross-replica statistics needs the
  mapped axis: a size-1 vmap binds it.
  """

  def init(rng, images):
    return network.init(rng, images, is_training=True)

  def init_one(rng, images):
    params, state = jax.vmap(init, in_axes=None, axis_size=1, axis_name=model.AXIS)(rng, images)
    params, state = jax.tree.map(lambda x: x[0], (params, state))
    return params, _untrained_bn_state(state)

  return init_one


def init_state(config, rng, *, image_shape, num_classes, steps_per_epoch) -> TrainState:
  """A fresh state: one copy, not replicated. The target starts as the online copy.

  One jitted program: op by op, every leaf's zeros and every initializer's shape would compile a
  program of its own, and in one program XLA drops the init's forward pass, whose only outputs
  (BN's moving averages) are reset.
  """
  init = _state_init(config, image_shape=image_shape, num_classes=num_classes,
                     steps_per_epoch=steps_per_epoch)
  return cpu_speed.jit_once(init)(rng)


def state_shapes(config, *, image_shape, num_classes, steps_per_epoch) -> TrainState:
  """init_state's shapes and dtypes (jax.ShapeDtypeStruct leaves), with nothing computed.

  Traced from the unjitted init: under a trace jax refuses a nested jit's compile options.
  """
  init = _state_init(config, image_shape=image_shape, num_classes=num_classes,
                     steps_per_epoch=steps_per_epoch)
  return jax.eval_shape(init, jax.random.PRNGKey(0))


def _state_init(config, *, image_shape, num_classes, steps_per_epoch):
  """init(rng) -> a fresh TrainState, unjitted."""
  network = model.make_network(config)
  probe = model.make_probe(num_classes)
  optimizer, probe_optimizer = make_optimizers(config, make_schedules(config, steps_per_epoch))
  has_target = method_of(config).has_target
  dummy = jnp.zeros((1,) + tuple(image_shape), jnp.float32)

  def init(rng):
    net_rng, probe_rng = jax.random.split(rng)
    params, state = _network_init(network)(net_rng, dummy)
    probe_params = probe_opt_state = None
    if probe is not None:
      probe_params = probe.init(probe_rng, jnp.zeros((1, model.embedding_size(config))))
      probe_opt_state = probe_optimizer.init(probe_params)
    return TrainState(step=jnp.zeros((), jnp.int32), online_params=params, online_state=state,
                      target_params=params if has_target else None,
                      target_state=state if has_target else None, opt_state=optimizer.init(params),
                      probe_params=probe_params, probe_opt_state=probe_opt_state)

  return init


def augment_views(config, batch, step):
  """The on-device BYOL augmentations of both views, each example keyed by its global position."""
  views = []
  for view_index, view_name in enumerate(("view1", "view2")):
    keys = augment.example_keys(config.seed, step, batch["index"], view_index)
    views.append(augment.augment_view(batch[view_name], keys, config[view_name].to_dict()))
  return views


def _mean_over_replicas(tree):
  return jax.lax.pmean(tree, axis_name=model.AXIS)


def apply_to_views(network, params, net_state, views):
  """([outputs of each view], net_state): each view is its own batch in training mode, as in the
  official code, so BN's statistics are per view."""
  outputs = []
  for view in views:
    out, net_state = network.apply(params, net_state, None, view, is_training=True)
    outputs.append(out)
  return outputs, net_state


def make_loss_fn(config, network, probe):
  """loss_fn(online_params, probe_params, online_state, views, targets, labels) -> (loss, aux).

  The returned loss is the method's loss plus the probe's (if `probe` is not None); the probe sees
  stop_gradient(features), so its loss sends no gradient into the encoder, and `targets` (the
  target network's outputs) enter only under stop_gradient. aux holds the losses, the new
  online_state and both views' projections, from which the collapse monitors are computed over
  the whole batch.
  """
  method = method_of(config)

  def loss_fn(online_params, probe_params, online_state, views, targets, labels):
    outputs, online_state = apply_to_views(network, online_params, online_state, views)
    loss = method.loss(outputs, targets)
    aux = dict(online_state=online_state, loss=loss,
               projections=[jax.lax.stop_gradient(out["projection"]) for out in outputs])
    if probe is None:
      return loss, aux
    embeddings = jnp.concatenate([outputs[0]["embedding"], outputs[1]["embedding"]])
    logits = probe.apply(probe_params, jax.lax.stop_gradient(embeddings))
    aux["probe_loss"], aux["probe_accuracy"] = losses.classification_loss(
        logits, jnp.concatenate([labels] * 2))
    return loss + aux["probe_loss"], aux

  return loss_fn


def check_accumulation(per_device_batch_size, accumulation_steps):
  """ConfigError unless the accumulation steps divide each device's batch (known once the device
  count is; config.validate checks the global batch)."""
  if per_device_batch_size % accumulation_steps:
    raise config_lib.ConfigError(
        f"config.accumulation_steps={accumulation_steps} does not divide the per-device batch of "
        f"{per_device_batch_size}: use a divisor of it, or a config.batch_size that makes it a "
        "multiple.")


def micro_batches(batch, accumulation_steps):
  """Each leaf [B, ...] -> [accumulation_steps, B / accumulation_steps, ...], in order.

  An example keeps its global index, so its augmentation is the one it gets in one big batch.
  """
  size = jax.tree.leaves(batch)[0].shape[0]
  check_accumulation(size, accumulation_steps)
  return jax.tree.map(
      lambda x: x.reshape((accumulation_steps, size // accumulation_steps) + x.shape[1:]), batch)


def make_update(config, *, num_classes, steps_per_epoch):
  """Returns per_replica_update(state, batch) -> (state, metrics), to be mapped over model.AXIS.

  With config.accumulation_steps = k, the replica's batch runs as k micro-batches in a lax.scan,
  so only one micro-batch's activations are alive at a time; their gradients are averaged before
  the one update. Without batch statistics (which config.validate requires for k > 1) that is the
  update of the whole batch. Logged losses are the micro-batches' mean (the probe's, where some
  examples have no label, weighs micro-batches as it weighs devices); the collapse monitors are
  over the replica's whole batch, as with k = 1.
  """
  network = model.make_network(config)
  probe = model.make_probe(num_classes)
  schedules = make_schedules(config, steps_per_epoch)
  optimizer, probe_optimizer = make_optimizers(config, schedules)
  method = method_of(config)
  loss_fn = make_loss_fn(config, network, probe)
  grad_fn = jax.grad(loss_fn, argnums=(0, 1), has_aux=True)

  def per_replica_update(state: TrainState, batch):
    k = config.accumulation_steps

    def accumulate(carry, micro_batch):
      grad_sum, online_state, target_state = carry
      views = augment_views(config, micro_batch, state.step)
      targets = None
      if method.has_target:
        targets, target_state = apply_to_views(network, state.target_params, target_state, views)
        targets = jax.lax.stop_gradient(targets)
      grads, aux = grad_fn(state.online_params, state.probe_params, online_state, views, targets,
                           micro_batch["label"])
      grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
      return (grad_sum, aux.pop("online_state"), target_state), aux

    zeros = jax.tree.map(jnp.zeros_like, (state.online_params, state.probe_params))
    carry = (zeros, state.online_state, state.target_state)
    (grad_sum, online_state, target_state), aux = _scan(accumulate, carry, micro_batches(batch, k))
    grads, probe_grads = _mean_over_replicas(jax.tree.map(lambda g: g / k, grad_sum))
    updates, opt_state = optimizer.update(grads, state.opt_state, state.online_params)
    online_params = optax.apply_updates(state.online_params, updates)
    probe_params, probe_opt_state = None, None
    if probe is not None:
      probe_updates, probe_opt_state = probe_optimizer.update(probe_grads, state.probe_opt_state)
      probe_params = optax.apply_updates(state.probe_params, probe_updates)
    tau, target_params = jnp.zeros(()), None
    if method.has_target:
      tau = schedules.tau(state.step)
      target_params = jax.tree.map(lambda t, o: tau * t + (1.0 - tau) * o, state.target_params,
                                   online_params)
    grad_norm = optax.tree.norm(grads)
    # The micro-batches' projections back as the replica's batch: monitors over all of it, as k=1.
    projections = [p.reshape((-1,) + p.shape[2:]) for p in aux.pop("projections")]
    metrics = {name: jnp.mean(value) for name, value in aux.items()}
    metrics.update(losses.collapse_metrics(*projections))
    metrics = _mean_over_replicas(metrics)
    finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
    metrics.update(grad_norm=grad_norm, lr=schedules.learning_rate(state.step), tau=tau,
                   finite=finite)
    new_state = TrainState(step=state.step + 1, online_params=online_params,
                           online_state=online_state, target_params=target_params,
                           target_state=target_state, opt_state=opt_state,
                           probe_params=probe_params, probe_opt_state=probe_opt_state)
    return new_state, metrics

  return per_replica_update


def _scan(body, carry, xs):
  """jax.lax.scan, but a single step runs the body as is: without accumulation the update's
  program is the one without a loop, which XLA fuses differently."""
  if jax.tree.leaves(xs)[0].shape[0] > 1:
    return jax.lax.scan(body, carry, xs)
  carry, ys = body(carry, jax.tree.map(lambda x: x[0], xs))
  return carry, jax.tree.map(lambda y: y[None], ys)


def map_over_devices(per_replica_fn, devices=None, donate=True):
  """pmap over the local devices (all hosts' devices join the same named axis).

  On CPU, one process, compiled with cpu_speed's options (the same numbers, faster kernels).
  """
  mapped = jax.pmap(per_replica_fn, axis_name=model.AXIS, devices=devices,
                    donate_argnums=(0,) if donate else ())
  if jax.process_count() > 1:
    return mapped
  return cpu_speed.compile_ahead(mapped, (devices or jax.local_devices())[0].platform)


def replicate(tree, devices=None):
  """Host tree -> one copy per device (default: the local ones), laid out as pmap's outputs are.

  Going through a pmap over the axis gives the arrays the same sharding as the update's outputs, so
  the second step does not compile the update again for a different input layout.
  """
  devices = devices or jax.local_devices()
  stacked = jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (len(devices),) + np.shape(x)),
                         tree)
  return jax.pmap(lambda x: x, axis_name=model.AXIS, devices=devices)(stacked)


def unreplicate(tree):
  """The first local device's copy, fetched to the host.

  Read from that device's buffer: indexing (x[0]) would compile a gather per leaf shape.
  """
  return jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data)[0], tree)
