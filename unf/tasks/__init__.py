"""Inner tasks (model + data + loss + spec) and the task families used for meta-training and evaluation."""

from unf.tasks.base import Task, TaskFamily
from unf.tasks.images import cnn_digits, mlp_digits, resnet_digits
from unf.tasks.nnx_models import nnx_task
from unf.tasks.text import lstm_lm, nnx_gpt_lm, transformer_lm

FAMILIES = {
    "mlp": TaskFamily("mlp", mlp_digits, ({"width": 32},), ({"width": 32}, {"width": 64})),
    "cnn": TaskFamily("cnn", cnn_digits, ({"channels": 8},), ({"channels": 8}, {"channels": 16})),
    "lstm": TaskFamily("lstm", lstm_lm, ({"hidden": 32},), ({"hidden": 32}, {"hidden": 64})),
    "transformer": TaskFamily(
        "transformer", transformer_lm, ({"d_model": 16},), ({"d_model": 16}, {"d_model": 32})
    ),
}


def family(name: str) -> TaskFamily:
    """Returns the task family ``name`` (one of :data:`FAMILIES`)."""
    if name not in FAMILIES:
        raise ValueError(f"task must be one of {tuple(FAMILIES)}, got {name!r}.")
    return FAMILIES[name]


__all__ = ["FAMILIES", "Task", "TaskFamily", "cnn_digits", "family", "lstm_lm", "mlp_digits", "nnx_gpt_lm", "nnx_task",
           "resnet_digits", "transformer_lm"]
