"""Documents a task reads: their text with pages and sections (`extract`), cut into passages
(`passages`), embedded offline (`embedder`) and indexed for search with citations (`index`)."""
