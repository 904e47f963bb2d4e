"""The three ways a :class:`~hetnet.models.Body` runs its layers, each a class chosen once from ``cfg.block``:
:class:`StackedBlocks` (``"standard"``), :class:`SharedBlock` (``"recurrent"``) and :class:`HyperSETLayer`
(``"hyperset"``). Each owns one entry of the body's params (``key``) and knows how to make it, label it and run it,
so the body never branches on the kind."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from hetnet import axes as axes_lib
from hetnet.blocks import Block
from hetnet.config import TransformerConfig
from hetnet.hyperset import HyperSET

# What a scanned block keeps for the backward pass. Saving everything makes the scan copy every residual (attention
# probabilities included) into stacked buffers, which on XLA:CPU costs about a third of the step; keeping only the
# weight matmuls' outputs recomputes the cheap rest and matches unrolled layers (benchmarks/compile_depth.py).
_POLICIES = {"dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
             "full": jax.checkpoint_policies.nothing_saveable}


def _remat(fn, policy: str):
    return fn if policy == "none" else jax.checkpoint(fn, policy=_POLICIES[policy])


@dataclasses.dataclass(frozen=True)
class _Blocks:
    """What the stacked and the shared body have in common: blocks of :class:`Block`, scanned over depth."""

    cfg: TransformerConfig

    @property
    def block(self) -> Block:
        return Block(self.cfg)

    def layer(self, params, i: int):
        """Returns layer ``i``'s block params from this stack's params entry."""
        raise NotImplementedError

    def _scanned(self, params):
        """Returns ``(per-layer params to scan over or None, layer 0's params)``."""
        raise NotImplementedError

    def run(self, params, x: jax.Array, padding_mask, keep_states: bool) -> tuple[jax.Array, Any]:
        """Returns ``(x after every layer, the stream after each layer [num_layers, *x.shape] or None)``.

        x: [batch, seq, d_model]
        """
        block = self.block
        stacked, first = self._scanned(params)
        carry = block.first_carry(first, x)

        def one(x, layer_params):
            p = params if layer_params is None else layer_params
            x = block.apply(p, x, padding_mask=padding_mask, carry=carry)
            return x, (x if keep_states else None)

        return jax.lax.scan(_remat(one, self.cfg.remat), x, stacked, length=self.cfg.num_layers)


class StackedBlocks(_Blocks):
    """``num_layers`` blocks with their own weights, stacked along a leading ``layers`` axis in ``params["blocks"]``
    (per-layer groups :class:`~hetnet.axes.Nested` in it), run by ``lax.scan``, each block under ``jax.checkpoint``
    with the policy ``cfg.remat``."""

    key = "blocks"
    has_blocks = True

    def init(self, key: jax.Array) -> dict:
        return jax.vmap(self.block.init)(jax.random.split(key, self.cfg.num_layers))

    @property
    def axes(self) -> dict:
        return axes_lib.stack(self.block.axes, "blocks")

    def layer(self, params, i: int):
        return jax.tree.map(lambda a: a[i], params)

    def _scanned(self, params):
        depth = {int(np.shape(a)[0]) for a in jax.tree.leaves(params)}
        if depth != {self.cfg.num_layers}:
            raise ValueError(f"params['blocks'] hold {sorted(depth)} stacked layers but the config has num_layers="
                             f"{self.cfg.num_layers}; apply the params with the model that made them.")
        return params, self.layer(params, 0)


class SharedBlock(_Blocks):
    """One block, ``params["shared_block"]``, applied ``num_layers`` times (labels scoped ``shared/``); its params
    do not depend on ``num_layers``."""

    key = "shared_block"
    has_blocks = True

    def init(self, key: jax.Array) -> dict:
        return self.block.init(key)

    @property
    def axes(self) -> dict:
        return axes_lib.scope(self.block.axes, "shared")

    def layer(self, params, i: int):
        return params

    def _scanned(self, params):
        return None, params


@dataclasses.dataclass(frozen=True)
class HyperSETLayer:
    """The Hyper-SET layer, ``params["hyperset"]``, iterated ``num_layers`` times; it has no blocks."""

    cfg: TransformerConfig
    key = "hyperset"
    has_blocks = False

    def init(self, key: jax.Array) -> dict:
        return HyperSET(self.cfg).init(key)

    @property
    def axes(self) -> dict:
        return HyperSET(self.cfg).axes

    def run(self, params, x: jax.Array, padding_mask, keep_states: bool) -> tuple[jax.Array, Any]:
        if keep_states:
            raise ValueError("the per-layer residual stream is read from a body of blocks; this config's block is "
                             "'hyperset' (use HyperSET.iterate for its trajectory).")
        return HyperSET(self.cfg).apply(params, x, padding_mask=padding_mask), None


#: The class that runs each ``TransformerConfig.block`` kind.
STACKS = {"standard": StackedBlocks, "recurrent": SharedBlock, "hyperset": HyperSETLayer}
