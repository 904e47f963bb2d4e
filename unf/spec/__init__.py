"""Weight-space specs: for each leaf of a params tree, one label per axis naming the permutation group acting on it.

Built from explicit labels (:func:`from_labels`), a hetnet model (:func:`from_hetnet`), flax logical axis names
(:func:`from_flax`), a feed-forward network's params (:func:`mlp`, :func:`cnn`, :func:`rnn`) or the model's own
computation (:func:`infer`; :func:`with_fan_in` adds the fan-in a trace reads to a spec written from names);
verified on the model itself with :func:`check_symmetry`.
"""

from hetnet.axes import Nested
from unf.spec.analogy import HETNET_ANALOGUES, extend_by_analogy
from unf.spec.check import check_symmetry
from unf.spec.core import (LAYERS_MODES, UNPERMUTED_WIDTH, Label, Unpermuted, WeightSpaceSpec, from_hetnet,
                           from_labels, layer_view, prefix_hint, relabel, unpermuted_as_groups)
from unf.spec.feedforward import cnn, mlp, rnn
from unf.spec.flax_names import FLAX_RULES, from_flax
from unf.spec.inference import infer, with_fan_in

__all__ = ["FLAX_RULES", "HETNET_ANALOGUES", "LAYERS_MODES", "Label", "Nested", "UNPERMUTED_WIDTH", "Unpermuted",
           "WeightSpaceSpec", "check_symmetry", "cnn", "extend_by_analogy", "from_flax", "from_hetnet", "from_labels",
           "infer", "layer_view", "mlp", "prefix_hint", "relabel", "rnn", "unpermuted_as_groups",
           "with_fan_in"]
