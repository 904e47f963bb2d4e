"""Serves the shipped ``transformer-lm`` rule on a Flax transformer named with MaxText-style logical axis names.

The rule was meta-trained on hetnet ``TransformerLM``s: its equivariant layer holds coefficients per pair of *their*
leaves. A Flax decoder whose axes carry the names ``vocab``, ``embed``, ``heads`` (or ``q_heads`` / ``kv_heads``),
``kv`` (or ``head_dim``), ``mlp`` and, for stacked layers, ``layers`` has the same tensors under other paths and
layouts; :func:`layout` finds each one's hetnet counterpart from its names (and, for the three ``[embed, heads, kv]``
projections and the two norms of a layer, from its path: ``query``/``key``/``value``, ``attn``/``mlp``), and the
optimizer runs on the hetnet layout and maps the updates back.

Served: token embedding ``[vocab, embed]``; per layer query, key, value ``[embed, heads, kv]`` (grouped-query:
query ``[embed, q_heads, kv]``, key and value ``[embed, kv_heads, kv]``), output ``[heads, kv, embed]``, an MLP
``[embed, mlp]`` / ``[mlp, embed]`` with an optional gate ``[embed, mlp]`` (``gate`` or ``wi_0`` in its path: the
hetnet SwiGLU's ``w_gate``), two norm scales ``[embed]`` and their optional offsets (``bias``: LayerNorm's); a final
norm scale and offset ``[embed]``; an unembedding ``[embed, vocab]``; layers stacked along ``layers`` or as
numbered modules. A learned position table (``pos`` in its path, ``[*, embed]``) is optional; without it, or with
logits tied to the embedding, the rule sees a zero stand-in for the missing tensor (no gradient, no update). The
gate and the offsets are served by a rule that reads labels only (the shipped one, its correction off); anything
else (projection biases) has no hetnet counterpart, and :func:`layout` refuses it by name (``pretrained`` then
serves a model named on every axis by the spec of its names instead).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hetnet.axes import LAYERS
from unf.spec import flax_names

_HEADS = ("heads", "q_heads", "kv_heads")
_HEAD_DIM = ("kv", "head_dim")
_KEYWORDS = {"query": re.compile(r"(^|[_/])(q|query|wq|q_proj)($|[_/])"),
             "key": re.compile(r"(^|[_/])(k|key|wk|k_proj)($|[_/])"),
             "value": re.compile(r"(^|[_/])(v|value|wv|v_proj)($|[_/])"),
             "gate": re.compile(r"(^|[_/])(gate|gate_proj|w_gate|wi_0)($|[_/])"),
             "attn_norm": re.compile(r"attn|attention|norm_?1|ln_?1|pre_att"),
             "ffn_norm": re.compile(r"mlp|ffn|feed|norm_?2|ln_?2|post_att|pre_ffw|pre_mlp")}


@dataclasses.dataclass(frozen=True)
class Slot:
    """Where one user leaf goes: the hetnet leaf ``target`` (a path of keys), the layer index (None for a leaf
    outside the layers or a stacked one), and the query's heads grouping ``q_per_kv``."""

    target: tuple[str, ...]
    layer: int | None
    stacked: bool
    q_per_kv: int = 1


@dataclasses.dataclass(frozen=True)
class Layout:
    """The map of a user's params onto the hetnet layout: one :class:`Slot` per user leaf (flatten order), the
    number of layers, the widths, and which hetnet leaves are zero stand-ins."""

    slots: tuple[Slot, ...]
    num_layers: int
    d_model: int
    vocab: int
    missing: tuple[tuple[str, ...], ...]
    names: tuple[str, ...] = ()


def _base(name) -> str:
    return str(name).rsplit("/", 1)[-1]


def layout(model_or_variables: Any) -> Layout:
    """Returns the :class:`Layout` of a Flax transformer (an nnx Module or State, or linen variables whose leaves are
    boxed with logical names). Raises ValueError listing every leaf without a hetnet counterpart."""
    params, names = flax_names.names_and_params(model_or_variables)
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    name_of = dict((jax.tree_util.keystr(p), s) for p, s in jax.tree_util.tree_flatten_with_path(
        names, is_leaf=lambda x: x is None or isinstance(x, tuple))[0])
    paths = [tuple(flax_names.key_name(e) for e in p) for p, _ in flat]
    leaf_names = [tuple(name_of.get(jax.tree_util.keystr(p)) or ()) for p, _ in flat]
    unnamed = [f"{'/'.join(path)} {tuple(np.shape(x))}" for path, (_, x), n in zip(paths, flat, leaf_names)
               if len(n) != np.ndim(x)]
    if unnamed:
        raise ValueError("the shipped transformer-lm optimizer reads each leaf's logical axis names to serve a "
                         f"model other than a hetnet TransformerLM; these leaves have none: {unnamed}. nnx.Optimizer "
                         "passes them with the params; for linen params pass pretrained(..., model=variables"
                         "['params']) (the boxed params from init).")
    scopes = flax_names.layer_scopes(list(zip(paths, leaf_names)))
    layer_ids = sorted({scopes[p] for p, n in zip(paths, leaf_names) if scopes[p] and LAYERS not in n},
                       key=lambda s: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)])
    slots, refused, depth = [], [], set()
    for path, (_, x), n in zip(paths, flat, leaf_names):
        stacked = bool(n) and n[0] == LAYERS
        core = tuple(_base(a) for a in (n[1:] if stacked else n))
        in_layer = stacked or bool(scopes[path])
        if stacked:
            depth.add(int(np.shape(x)[0]))
        target = _target(core, "/".join(path).lower(), in_layer)
        if target is None:
            refused.append(f"{'/'.join(path)} {tuple(np.shape(x))} names {n}")
            continue
        slots.append(Slot(target, None if stacked or not in_layer else layer_ids.index(scopes[path]), stacked))
    if refused:
        raise ValueError(
            "the shipped transformer-lm optimizer serves decoders without projection biases (embedding, per layer "
            "query/key/value/output projections, an MLP of two matrices or three with a gate named gate/wi_0, two "
            "norms with or without offsets, a final norm, an unembedding); these leaves have no counterpart: "
            f"{refused}.")
    lay = _finish(slots, flat, paths, layer_ids, depth)
    return dataclasses.replace(lay, names=tuple(jax.tree_util.keystr(p) for p, _ in flat))


def _target(core: tuple[str, ...], path: str, in_layer: bool) -> tuple[str, ...] | None:
    # A norm's offset sits beside its scale: both are [embed], told apart by the leaf's own name.
    vector = "bias" if path.rsplit("/", 1)[-1] == "bias" else "scale"
    if not in_layer:
        if core == ("vocab", "embed"):
            return ("tokens",)
        if core == ("embed", "vocab"):
            return ("unembed",)
        if core == ("embed",):
            return ("final_norm", vector)
        if len(core) == 2 and core[1] == "embed" and "pos" in path:
            return ("positions",)
        return None
    if len(core) == 3 and core[0] == "embed" and core[1] in _HEADS and core[2] in _HEAD_DIM:
        hits = [k for k in ("query", "key", "value") if _KEYWORDS[k].search(path)]
        return ("blocks", "attn", hits[0]) if len(hits) == 1 else None
    if len(core) == 3 and core[0] in _HEADS and core[1] in _HEAD_DIM and core[2] == "embed":
        return ("blocks", "attn", "out")
    if core == ("embed", "mlp"):
        return ("blocks", "ffn", "w_gate" if _KEYWORDS["gate"].search(path) else "w_in")
    if core == ("mlp", "embed"):
        return ("blocks", "ffn", "w_out")
    if core == ("embed",):
        hits = [k for k in ("attn_norm", "ffn_norm") if _KEYWORDS[k].search(path.rsplit("/", 1)[0])]
        return ("blocks", hits[0], vector) if len(hits) == 1 else None
    return None


def _finish(slots, flat, paths, layer_ids, depth) -> Layout:
    targets = [s.target for s in slots]
    per_layer = {}
    for s, path in zip(slots, paths):
        key = (s.target, s.layer)
        if key in per_layer:
            raise ValueError(f"the shipped transformer-lm optimizer found two leaves for the hetnet tensor "
                             f"{'/'.join(s.target)}: {per_layer[key]} and {'/'.join(path)}; name them apart "
                             "(query/key/value, attention/mlp norms, a gated MLP's gate as gate or wi_0).")
        per_layer[key] = "/".join(path)
    if len(depth) > 1 or (depth and layer_ids):
        raise ValueError("the shipped transformer-lm optimizer needs the layers either stacked along one 'layers' "
                         f"axis or as numbered modules; found stacks of {sorted(depth)} and modules {layer_ids}.")
    num_layers = depth.pop() if depth else len(layer_ids)
    if num_layers == 0:
        raise ValueError("the shipped transformer-lm optimizer found no layers (a 'layers' axis or numbered modules).")
    shapes = {s.target: np.shape(x)[1:] if s.stacked else np.shape(x) for s, (_, x) in zip(slots, flat)}
    required = [("tokens",), ("final_norm", "scale")] + [("blocks", *t) for t in (
        ("attn", "query"), ("attn", "key"), ("attn", "value"), ("attn", "out"), ("ffn", "w_in"), ("ffn", "w_out"),
        ("attn_norm", "scale"), ("ffn_norm", "scale"))]
    absent = [t for t in required if t not in targets]
    if absent:
        raise ValueError(f"the shipped transformer-lm optimizer found no leaf for {['/'.join(t) for t in absent]}; "
                         "it serves decoders with all of them (see unf.lopt.flax_transformer).")
    if layer_ids:
        counts = {t: sum(1 for s in slots if s.target == t) for t in set(targets) if t[0] == "blocks"}
        short = {"/".join(t): c for t, c in counts.items() if c != num_layers}
        if short:
            raise ValueError(f"the shipped transformer-lm optimizer expects one of each tensor per layer "
                             f"({num_layers} layers); found {short}.")
    vocab, d_model = shapes[("tokens",)]
    q_heads = shapes[("blocks", "attn", "query")][1]
    kv_heads = shapes[("blocks", "attn", "key")][1]
    if q_heads % kv_heads:
        raise ValueError(f"query heads ({q_heads}) must be a multiple of key/value heads ({kv_heads}).")
    slots = tuple(dataclasses.replace(s, q_per_kv=q_heads // kv_heads) if s.target[-1] in ("query", "out") else s
                  for s in slots)
    missing = tuple(t for t in (("positions",), ("unembed",)) if t not in targets)
    return Layout(slots, num_layers, int(d_model), int(vocab), missing)


def _to_hetnet_leaf(x: jax.Array, slot: Slot) -> jax.Array:
    """Reshapes a user leaf (one layer's, or a stack's) to the hetnet layout: grouped query heads split in two."""
    lead = x.shape[:1] if slot.stacked else ()
    core = x.shape[1:] if slot.stacked else x.shape
    if slot.target[-1] == "query":
        d, heads, hd = core
        return x.reshape(*lead, d, heads // slot.q_per_kv, slot.q_per_kv, hd)
    if slot.target[-1] == "out":
        heads, hd, d = core
        return x.reshape(*lead, heads // slot.q_per_kv, slot.q_per_kv, hd, d)
    return x


def to_hetnet(lay: Layout, leaves: list) -> dict:
    """Returns the hetnet-layout params for the user's leaves (flatten order): layers stacked, missing tensors zero."""
    out: dict = {}
    per_layer: dict = {}
    for slot, x in zip(lay.slots, leaves):
        x = _to_hetnet_leaf(jnp.asarray(x), slot)
        if slot.layer is not None:
            per_layer.setdefault(slot.target, [None] * lay.num_layers)[slot.layer] = x
        else:
            _put(out, slot.target, x)
    for target, xs in per_layer.items():
        _put(out, target, jnp.stack(xs))
    dtype = jnp.result_type(leaves[0]) if leaves else jnp.float32
    for target in lay.missing:
        _put(out, target, jnp.zeros((1, lay.d_model) if target == ("positions",) else (lay.d_model, lay.vocab),
                                    dtype))
    return out


def from_hetnet(lay: Layout, tree: dict, like: list) -> list:
    """Returns the user's leaves (flatten order, shaped like ``like``) read back from a hetnet-layout tree."""
    out = []
    for slot, ref in zip(lay.slots, like):
        x = _get(tree, slot.target)
        if slot.layer is not None:
            x = x[slot.layer]
        out.append(x.reshape(np.shape(ref)))
    return out


def _put(tree: dict, path: tuple[str, ...], value) -> None:
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


def _get(tree: dict, path: tuple[str, ...]):
    for k in path:
        tree = tree[k]
    return tree
