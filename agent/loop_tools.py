"""The tools the loop itself answers: the planner's `submit_plan` and the executor's step controls.

They are declared with `@tool` so their schemas come from their signatures like any tool's; the
runner handles them itself and never invokes these functions.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from tools.registry import Registry
from tools.tool import tool

MAX_PLAN_STEPS = 20


@tool
def submit_plan(
    steps: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=500)]],
        Field(min_length=1, max_length=MAX_PLAN_STEPS),
    ],
) -> None:
    """Submit the plan: the steps that will accomplish the task, in order.

    Args:
        steps: one short imperative sentence per step.
    """


@tool
def complete_step(summary: Annotated[str, Field(min_length=1, max_length=4000)]) -> None:
    """Mark the current step as done. After the last step, the task is finished.

    Args:
        summary: what the step found or achieved; after the last step, the answer to the task.
    """


@tool
def replan(reason: Annotated[str, Field(min_length=1, max_length=2000)]) -> None:
    """Give up on the current plan: the step failed, or the plan no longer fits what you found.

    Args:
        reason: what went wrong or what changed; the planner reads it.
    """


@tool
def finish(answer: Annotated[str, Field(min_length=1, max_length=20000)]) -> None:
    """Finish the whole task now with a final answer for the person who gave it.

    Args:
        answer: the answer to the task, in full.
    """


PLANNER = Registry([submit_plan])
EXECUTOR = Registry([complete_step, replan, finish])
