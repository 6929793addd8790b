"""A plugin that cannot be imported: it needs a package that is not installed."""

import a_dependency_nobody_installed  # type: ignore[import-not-found]  # noqa: F401
