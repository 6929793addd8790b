"""What a model is told about a tool. The registry makes these from tools; the backends send
them to models; neither imports the other for it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class ToolSpec(BaseModel):
    """What a model is told about a tool: its name, description and JSON schema."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str
    parameters: dict[str, Any]
