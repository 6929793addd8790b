"""Docker sandboxes: one hardened container per task.

Nothing lives here yet: the sandbox, its runtime image and the tools that need it arrive with the
sandbox work. Until then the runtime ships only tools that touch nothing outside the process.
"""
