"""Command-line options that every command loading a dataset shares (the core's commands and
plugins' commands alike), defined once so that their names, defaults and help stay the same."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

F = TypeVar("F", bound=Callable[..., object])

_DATA_AND_DEVICE = (
    click.option(
        "--data-root",
        type=click.Path(file_okay=False),
        default=None,
        help="Where the dataset lives (overrides $DDBENCH_DATA).",
    ),
    click.option("--download", is_flag=True, help="Allow downloading the dataset where a network exists."),
    click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto."),
    click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars."),
)


def data_and_device_options(command: F) -> F:
    """``--data-root``, ``--download``, ``--device`` and ``--progress/--no-progress``, in that order."""
    for option in reversed(_DATA_AND_DEVICE):  # click lists the last-applied decorator first
        command = option(command)
    return command


#: ``--eval-batch/--no-eval-batch`` of the commands that score synthetic sets (``run``, ``evaluate``)
eval_batch_option = click.option(
    "--eval-batch/--no-eval-batch",
    default=None,
    help="Train each evaluator's seeds as one batched model (the same training up to float rounding, which long "
    "training of deep networks can amplify), or one after another. [default: batched on a GPU, one after another "
    "on a CPU]",
)
