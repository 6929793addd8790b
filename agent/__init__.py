"""The agent runtime: a planner-executor loop over a durable event log."""

__version__ = "0.1.0"
