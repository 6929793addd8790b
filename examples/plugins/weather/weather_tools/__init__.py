"""Example tools, installed as a package: the runtime registers the tools this module defines
(its `agent.tools` entry point names the module)."""

from __future__ import annotations

from agent_runtime import ToolError, tool

#: a forecast that needs no network, so that the example runs anywhere
_FORECASTS = {"oslo": ("sunny", 4), "lisbon": ("cloudy", 17), "nairobi": ("rain", 21)}


@tool(touches="read")
def forecast(city: str) -> dict[str, str | int]:
    """Tomorrow's weather in a city.

    Args:
        city: the city's name, e.g. "Oslo".
    """
    found = _FORECASTS.get(city.strip().lower())
    if found is None:
        raise ToolError(f"no forecast for {city!r}; known: " + ", ".join(sorted(_FORECASTS)))
    sky, celsius = found
    return {"city": city, "sky": sky, "celsius": celsius}
