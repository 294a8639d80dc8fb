"""Kubernetes resource quantities, as the downward API reports them."""

from __future__ import annotations

import math

from kubernetes.utils import parse_quantity


def divide_rounding_up(value: str, divisor: str | None) -> str:
    """value / divisor rounded up to an integer, as the downward API reports resources
    (quantities parsed by the Kubernetes client's own parser: "500m", "64Gi", "1e3")."""
    result = parse_quantity(value) / parse_quantity(divisor or "1")
    return str(math.ceil(result))
