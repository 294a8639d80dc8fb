"""Kubernetes resource quantities ("500m", "64Gi", "1e3") as exact decimals."""

from __future__ import annotations

import math
import re
from decimal import Decimal

_SUFFIXES = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}
_PATTERN = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[a-zA-Z]*)$")


def parse_quantity(value: str | int | float) -> Decimal:
    """Parse a quantity string; raises ValueError for anything Kubernetes would reject."""
    if isinstance(value, int | float):
        return Decimal(str(value))
    match = _PATTERN.match(value.strip())
    if not match:
        raise ValueError(f"invalid quantity {value!r}")
    number, suffix = match.groups()
    if suffix[:1] in ("e", "E"):
        return Decimal(number) * Decimal(10) ** int(suffix[1:])
    if suffix not in _SUFFIXES:
        raise ValueError(f"invalid quantity suffix in {value!r}")
    return Decimal(number) * _SUFFIXES[suffix]


def divide_rounding_up(value: str, divisor: str | None) -> str:
    """value / divisor rounded up to an integer, as the downward API reports resources."""
    result = parse_quantity(value) / parse_quantity(divisor or "1")
    return str(math.ceil(result))
