"""What a citation calls a file: the fewest of its path's last parts that tell it from every other
file indexed. Most files are known by their name alone (`guide.pdf:p.3:10-24`); two files both
named `index.rst` are `api/index.rst` and `tutorial/index.rst`, so that an answer's citation
names one file, and `agent show` lists the one the answer used.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import PurePath


def cite_names(paths: Iterable[str]) -> dict[str, str]:
    """Each of `paths` with the shortest ending of it (whole parts) that none of the others has."""
    by_name: defaultdict[str, list[tuple[str, ...]]] = defaultdict(list)
    for path in dict.fromkeys(paths):
        parts = PurePath(path).parts
        by_name[parts[-1] if parts else path].append(parts)
    names: dict[str, str] = {}
    for name, group in by_name.items():
        if len(group) == 1:
            names[str(PurePath(*group[0]))] = name
            continue
        for parts in group:
            for size in range(2, len(parts) + 1):
                ending = parts[-size:]
                if sum(1 for other in group if other[-size:] == ending) == 1:
                    break
            names[str(PurePath(*parts))] = "/".join(ending).replace("//", "/", 1)
    return names
