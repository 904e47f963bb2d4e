"""A slow reference for the equivariant layer: materialise every term as a dense matrix, mix channels term by term."""

import numpy as np

from unf import basis
from unf.layers import fold, signature_weights, unfold


def equivariant_layer(layer, params, x):
    plan = layer.plan
    xs = [np.asarray(fold(leaf, layout), np.float64) for leaf, layout in zip(layer.spec.leaves(x), plan.in_layouts)]
    flat_in = [v.reshape(int(np.prod(v.shape[:-1])), v.shape[-1]) for v in xs]
    outputs = []
    for o, (sigs, layout) in enumerate(zip(plan.signatures, plan.out_layouts)):
        width = layout.channel_factor * plan.c_out
        acc = np.zeros((int(np.prod(layout.folded_sizes)), width))
        for sig, w in zip(sigs, signature_weights(plan, params["weights"])[o]):
            w = np.asarray(w, np.float64)
            for c in sig.contributions:
                rows = w[c.rows[0] : c.rows[1]]
                if c.reduction < 0:
                    t = basis.term_matrix(c.term, layout.shape, (), layer.reduction)
                    acc += t @ rows
                else:
                    leaf = plan.reductions[c.reduction].leaf
                    t = basis.term_matrix(c.term, layout.shape, plan.in_layouts[leaf].shape, layer.reduction)
                    acc += t @ flat_in[leaf] @ rows
        outputs.append(np.asarray(unfold(acc.reshape(layout.folded_sizes + (width,)), layout, plan.c_out)))
    return layer.spec.unflatten(outputs)
