"""A dataset split with optional slicing, as the datasets library spells it."""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

# "train", "train[:1000]", "train[10%:20%]" (the datasets library's split syntax).
SplitExpr = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+(\[[0-9%:+-]*\])?$"),
]
