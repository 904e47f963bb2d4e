"""Specs of feed-forward networks from their params alone: MLPs, CNNs with a pooled head, recurrent cells."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from unf.spec.core import UNPERMUTED_WIDTH, Label, WeightSpaceSpec, from_labels

_NUMBERED = re.compile(r"^(?P<stem>.*?)_?(?P<index>\d+)$")


def _network_order(keys: list) -> list:
    """Returns ``keys`` in network order: by their number when every key is ``<stem><n>`` or ``<stem>_<n>`` with one
    stem (flax's ``Dense_0, Dense_1, ..., Dense_10``, which ``jax.tree.map`` returns sorted as strings, so
    ``Dense_10`` before ``Dense_2``), else as given."""
    matches = [_NUMBERED.match(k) if isinstance(k, str) else None for k in keys]
    if keys and all(matches) and len({m.group("stem") for m in matches}) == 1:
        return [k for _, k in sorted(zip((int(m.group("index")) for m in matches), keys))]
    return keys


def _layer_keys(params: Any, name: str, order: Sequence | None) -> list:
    """Returns the layer keys (dict) or indices (list) in network order: ``order`` if given; else, for keys numbered
    with one stem (``Dense_0 ... Dense_10``), by number; else the dict's own order, which is call order for params
    made by flax's ``init``."""
    if isinstance(params, Mapping):
        keys = _network_order(list(params)) if order is None else list(order)
        if sorted(map(repr, keys)) != sorted(map(repr, params)):
            raise ValueError(f"{name} order {keys} must name every layer of the params exactly once: {list(params)}.")
        return keys
    if isinstance(params, (list, tuple)):
        if order is not None:
            raise ValueError(f"{name} order applies to a dict of layers; a list is already in order.")
        return list(range(len(params)))
    raise TypeError(f"{name} params must be a list of layers or a dict of layers, got {type(params).__name__}.")


def _kernel_and_bias(layer: Any, name: str, i: int):
    if not isinstance(layer, Mapping):
        raise TypeError(f"{name} layer {i} must be a dict with a kernel ('kernel' or 'w'), got {type(layer).__name__}.")
    k_key = next((k for k in ("kernel", "w") if k in layer), None)
    if k_key is None:
        raise ValueError(f"{name} layer {i} has keys {sorted(layer)}; expected 'kernel' or 'w' (and 'bias' or 'b').")
    b_key = next((k for k in ("bias", "b") if k in layer), None)
    extra = set(layer) - {k_key, b_key}
    if extra:
        raise ValueError(f"{name} layer {i} has unexpected keys {sorted(extra)}.")
    return k_key, b_key


def _feedforward_labels(params: Any, name: str, input_label, output_label, spatial_ok: bool, order) -> Any:
    keys = _layer_keys(params, name, order)
    if not keys:
        raise ValueError(f"{name} params hold no layers; give at least one layer with a kernel ('kernel' or 'w').")
    labels = {}
    prev, prev_key, prev_size, prev_conv = input_label, None, None, False
    for i, key in enumerate(keys):
        layer = params[key]
        k_key, b_key = _kernel_and_bias(layer, name, i)
        shape = np.shape(layer[k_key])
        kernel_rank = len(shape)
        if kernel_rank != 2 and not (spatial_ok and kernel_rank >= 3):
            raise ValueError(f"{name} layer {i} kernel has rank {kernel_rank}; expected [in, out]"
                             + (" or [*spatial, in, out]" if spatial_ok else "") + ".")
        fan_in = shape[-2]
        if prev_size is not None and fan_in != prev_size:
            if not (prev_conv and kernel_rank == 2 and fan_in % prev_size == 0):
                raise ValueError(f"{name} layer {i} ({key!r}) kernel reads {fan_in} features, but layer {i - 1} "
                                 f"({prev_key!r}) gives {prev_size}.")
            # A flatten ahead of the head fixes where each channel lands, so the last conv's channels do not permute;
            # they and the flattened axis still grow with the width, which the learned optimizers' step sizes read.
            prev = UNPERMUTED_WIDTH
            labels[prev_key] = {k: label[:-1] + (UNPERMUTED_WIDTH,) for k, label in labels[prev_key].items()}
        out = output_label if i == len(keys) - 1 else i
        entry = {k_key: (None,) * (kernel_rank - 2) + (prev, out)}
        if b_key is not None:
            entry[b_key] = (out,)
        labels[key] = entry
        prev, prev_key, prev_size, prev_conv = out, key, shape[-1], kernel_rank >= 3
    if isinstance(params, Mapping):
        return {k: labels[k] for k in params}
    return type(params)(labels[i] for i in range(len(keys)))


def _plain(params: Any) -> Any:
    """Returns a params tree of arrays: an nnx Module's ``nnx.Param`` state or an ``nnx.State`` as a pure dict, linen's
    boxed (partitioned) params unboxed, anything else as given."""
    from flax import nnx
    from flax.core import meta

    if isinstance(params, nnx.Module):
        return nnx.to_pure_dict(nnx.state(params, nnx.Param))
    if isinstance(params, nnx.State):
        return nnx.to_pure_dict(params)
    return meta.unbox(params)


def _is_wrapper(params: Any) -> bool:
    """Whether ``params`` is one key around the network (flax's ``{"params": ...}``, an nnx model's ``{"layers":
    ...}`` list), not a one-layer network or a cell's single part."""
    if not isinstance(params, Mapping) or len(params) != 1:
        return False
    (inner,) = params.values()
    return isinstance(inner, (list, tuple)) or (isinstance(inner, Mapping) and not {"kernel", "w"} & set(inner))


def _dense_fan_in(spec: WeightSpaceSpec) -> WeightSpaceSpec:
    """Returns ``spec`` with the fan-in of dense and conv layers: a kernel ``[*spatial, in, out]`` contracts every
    axis but its last, a bias none."""
    return dataclasses.replace(spec, fan_in=tuple(tuple(range(len(shape) - 1)) if len(shape) >= 2 else ()
                                                  for shape in spec.leaf_shapes))


def _flax_variables(helper):
    """Lets a helper take an nnx Module, an ``nnx.State``, linen's ``{"params": ...}`` variables (boxed or not) and
    any single key around the layers (an nnx model's ``layers`` list) as well as the bare params tree; the spec
    describes the tree of arrays, which ``nnx.Optimizer`` and optax hand the optimizer."""

    def wrapped(params, **kwargs):
        params = _plain(params)
        if _is_wrapper(params):
            ((key, inner),) = params.items()
            return _dense_fan_in(from_labels(params, {key: wrapped(inner, **kwargs).axes_tree()}))
        return _dense_fan_in(helper(params, **kwargs))

    wrapped.__doc__, wrapped.__name__ = helper.__doc__, helper.__name__
    return wrapped


@_flax_variables
def mlp(
    params: Any,
    *,
    input_label: Label | None = None,
    output_label: Label | None = None,
    order: Sequence | None = None,
) -> WeightSpaceSpec:
    """Returns the spec of an MLP: a list of layers, or a dict of layers in network order (flax's ``init`` output
    is; else pass ``order``, the keys in network order). Each layer has a kernel ``[in, out]`` (``kernel`` or
    ``w``) and optional bias ``[out]``. Hidden layer ``i``'s units carry label ``i``; the network's input and output
    axes are unpermuted unless labels are given.
    """
    return from_labels(params, _feedforward_labels(params, "mlp", input_label, output_label, False, order))


@_flax_variables
def cnn(
    params: Any,
    *,
    input_label: Label | None = None,
    output_label: Label | None = None,
    order: Sequence | None = None,
) -> WeightSpaceSpec:
    """Returns the spec of a CNN: layers (ordered as for :func:`mlp`) with kernels ``[*spatial, in, out]`` (conv) or
    ``[in, out]`` (dense). Spatial kernel axes are not permuted. Under global pooling before the dense head the pooled
    channels keep the last conv layer's label, so the first dense layer's input axis shares it; a head that flattens
    the feature map (its first dense layer reads a multiple of the channels, as the Flax tutorial's CNN) fixes where
    each channel lands, so the last conv layer's channels and the flattened axis are not permuted; both are listed in
    the spec's ``unpermuted_widths``, since they grow with the width (the learned optimizers step that conv kernel and
    the first dense kernel as hidden matrices). Each kernel's fan-in (``spec.fan_in``) is every axis but its last, so
    a conv kernel is orthogonalised as one ``[*spatial x in, out]`` matrix.
    """
    return from_labels(params, _feedforward_labels(params, "cnn", input_label, output_label, True, order))


@_flax_variables
def rnn(params: Any, *, hidden_label: Label = "hidden", input_label: Label | None = None) -> WeightSpaceSpec:
    """Returns the spec of a recurrent cell's params: a dict of dense parts, one per gate and source (linen's and
    nnx's ``LSTMCell``, linen's ``GRUCell`` and ``OptimizedLSTMCell``, nnx's ``SimpleCell``: ``{"ii": {"kernel":
    [in, h]}, "hi": {"kernel": [h, h], "bias": [h]}, ...}``), or of raw arrays with the same shapes. A kernel whose
    first axis reads the hidden state (key starting with ``h`` or ending with ``_h``, as nnx's ``dense_h``) carries
    the hidden group on both axes; input kernels carry ``input_label`` then the hidden group; biases the hidden
    group. Gates fused into one ``[in, k * h]`` kernel (nnx's ``GRUCell`` and ``OptimizedLSTMCell``) are refused:
    a permutation of the hidden units moves the same units in every gate, which one label per axis cannot say.
    """
    if not isinstance(params, Mapping) or not params:
        raise TypeError("rnn params must be a non-empty dict of the cell's dense parts.")

    def reads_hidden(key) -> bool:
        return str(key).startswith("h") or str(key).endswith("_h")

    def parts(key, part):
        return part.items() if isinstance(part, Mapping) else [(key, part)]

    hidden_sizes = {np.shape(arr)[0] for key, part in params.items() if reads_hidden(key)
                    for _, arr in parts(key, part) if np.ndim(arr) == 2}
    if len(hidden_sizes) > 1:
        raise ValueError(f"rnn kernels reading the hidden state have first axes of sizes {sorted(hidden_sizes)}; "
                         "a cell has one hidden size.")

    def labels_for(key: str, leaf_name: str, arr) -> tuple:
        if isinstance(arr, Mapping):
            raise ValueError(f"rnn part {key!r}/{leaf_name} is a dict (keys {sorted(arr)}), not an array: pass the "
                             f"cell's own params (such as params[{key!r}] when {key!r} is the cell), not a model's "
                             "around it; unf.spec.infer reads a whole model.")
        rank = np.ndim(arr)
        if rank not in (1, 2):
            raise ValueError(f"rnn part {key!r}/{leaf_name} has rank {rank}; expected a [in, h] kernel or [h] bias.")
        units = np.shape(arr)[-1]
        if hidden_sizes and units != next(iter(hidden_sizes)):
            (h,) = hidden_sizes
            fused = f" ({units // h} gates fused into one kernel)" if units % h == 0 else ""
            raise ValueError(
                f"rnn part {key!r}/{leaf_name} has shape {np.shape(arr)}, whose last axis is not the hidden size {h}"
                f"{fused}. A permutation of the hidden units moves the same units in every gate, which one label "
                "per axis cannot say: use a cell with one part per gate (nnx.LSTMCell, linen's LSTMCell, GRUCell "
                "or OptimizedLSTMCell), or label it yourself with unf.spec.from_labels.")
        if rank == 1:
            return (hidden_label,)
        return (hidden_label if reads_hidden(key) else input_label, hidden_label)

    labels = {}
    for key, part in params.items():
        if isinstance(part, Mapping):
            labels[key] = {name: labels_for(key, name, arr) for name, arr in part.items()}
        else:
            labels[key] = labels_for(key, key, part)
    return from_labels(params, labels)
