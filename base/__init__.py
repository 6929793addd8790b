"""What every layer shares, at the bottom of the import graph: the program's errors
(`base.errors`) and what a model is told about a tool (`base.toolspec`). Nothing here imports
another package of the project."""
