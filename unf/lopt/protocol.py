"""The contract every learned optimizer meets, so that meta-training, evaluation and shipping read it the same way."""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

import jax
import optax


@runtime_checkable
class LearnedOptimizer(Protocol):
    """A learned update rule: meta-params made by ``init_meta_params`` and turned into an optax transformation by
    ``opt_fn``.

    ``name`` identifies the rule in run descriptions and results; ``hidden`` is its width (None when it has no
    network); ``uses_total_steps`` says whether its update reads the run's length (a schedule over training
    progress), so meta-training and evaluation must pass the true one; ``layer_key`` names the params entry whose
    leaves are stacked layers (None when the rule treats the params tree as a whole).

    Meta-training also reads ``serving(spec, params)``, the rule that trains a task's params (another
    architecture's, through its spec), and ``project_meta_params(meta_params)``, the meta-params returned to their
    domain (a decay at zero or above) after every meta-step; :class:`OwnNetworksOnly` gives both to a rule that
    trains only its own networks over unbounded meta-params.
    """

    name: str
    hidden: int | None
    layer_key: str | None
    uses_total_steps: ClassVar[bool]

    def init_meta_params(self, key: jax.Array) -> Any: ...

    def opt_fn(self, meta_params: Any, *, total_steps: int | jax.Array | None = None,
               learning_rate: Any = None) -> optax.GradientTransformationExtraArgs: ...

    def serving(self, spec: Any, params: Any) -> LearnedOptimizer: ...

    def project_meta_params(self, meta_params: Any) -> Any: ...


class OwnNetworksOnly:
    """The meta-training hooks of a rule that trains every task itself (it refuses networks it cannot serve when it
    is built on them) and whose meta-params have no bounds."""

    def serving(self, spec: Any, params: Any) -> LearnedOptimizer:
        """Returns this rule: it trains every task itself."""
        return self

    def project_meta_params(self, meta_params: Any) -> Any:
        """Returns ``meta_params`` unchanged: every value is in the domain."""
        return meta_params


def check_fixed_step(name: str, learning_rate: Any) -> None:
    """Raises ValueError when a learning rate is given to a rule whose step size is its own (meta-learned)."""
    if learning_rate is not None:
        raise ValueError(f"the {name!r} rule learns its own step size and takes no learning_rate, got "
                         f"{learning_rate!r}; use a learned-Adam rule (EquivariantAdam) to set one.")
