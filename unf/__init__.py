"""unf: universal neural functionals over weight spaces described by axis labels.

A :class:`WeightSpaceSpec` labels every axis of every weight tensor with the permutation group acting on it
(:mod:`unf.spec` builds one from explicit labels, a hetnet model, or an MLP/CNN/RNN's params). :mod:`unf.basis`
enumerates every equivariant linear map between two weight tensors; :mod:`unf.layers` builds fast equivariant and
invariant layers from them.
"""

from unf import basis, layers, lopt, spec
from unf.basis import term_count_table
from unf.layers import EquivariantLinear, InvariantLinear, PointwiseLinear, pointwise
from unf.spec import WeightSpaceSpec


def describe(weight_space: WeightSpaceSpec) -> None:
    """Prints a table of the number of equivariant basis terms between every pair of leaves of ``weight_space``."""
    print(term_count_table(weight_space))


__all__ = [
    "EquivariantLinear",
    "InvariantLinear",
    "PointwiseLinear",
    "WeightSpaceSpec",
    "basis",
    "describe",
    "layers",
    "lopt",
    "pointwise",
    "spec",
]
