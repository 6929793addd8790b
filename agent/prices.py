"""What a model's tokens cost."""

from __future__ import annotations

from dataclasses import dataclass

from agent.backends.base import Usage


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    input: float
    output: float

    def cost(self, usage: Usage) -> float:
        return (usage.input_tokens * self.input + usage.output_tokens * self.output) / 1e6


#: what a model on this machine costs, unless the price table says otherwise
FREE = Price(0.0, 0.0)
