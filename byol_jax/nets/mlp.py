"""The BYOL projector / predictor: Linear -> norm -> ReLU -> Linear."""
import haiku as hk
import jax

from byol_jax.nets import layers


class MLP(hk.Module):
  """Linear(hidden, bias) -> norm -> ReLU -> Linear(output, no bias).

  Module paths: `<name>/~/linear_0`, `<name>/~/norm`, `<name>/~/linear_1`.
  The output layer has no bias and no norm, as in BYOL.
  """

  def __init__(self, hidden_size=4096, output_size=256, norm="bn", weight_standardization=False,
               gn_groups=16, bn_cross_replica_axis=None, bn_decay_rate=0.9, name=None):
    """Builds the head; ValueError on an unknown norm or gn_groups < 1."""
    super().__init__(name=name)
    linear = layers.WSLinear if weight_standardization else layers.Linear
    self._hidden = linear(hidden_size, with_bias=True, name="linear_0")
    self._norm = layers.make_norm(norm, name="norm", gn_groups=gn_groups,
                                  bn_cross_replica_axis=bn_cross_replica_axis,
                                  bn_decay_rate=bn_decay_rate)
    self._output = linear(output_size, with_bias=False, name="linear_1")

  def __call__(self, x: jax.Array, is_training: bool) -> jax.Array:
    x = jax.nn.relu(self._norm(self._hidden(x), is_training))
    return self._output(x)
