"""Value checks for config dataclasses, shared by every layer (this is the lowest one).

Each raises ValueError whose message starts with the config key as the user writes it on the
command line, e.g. `sim.alpha: must be in (0, 1), got 1.5`, so the error names what to change.
Type errors (a string where a number goes) are refused earlier, when Hydra composes the config
against the registered schemas (recsim/jobs/schemas.py); these checks catch the values a type
allows but the code cannot use.
"""

from __future__ import annotations

from collections.abc import Iterable


def number(key: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key}: must be a number, got {value!r}")


def at_least(key: str, value, low, *, optional: bool = False) -> None:
    """value >= low; None passes when `optional` (the field's "not set")."""
    if value is None and optional:
        return
    number(key, value)
    if value < low:
        raise ValueError(f"{key}: must be >= {low}{' (or null)' if optional else ''}, got {value!r}")


def positive(key: str, value, *, optional: bool = False) -> None:
    """value > 0; None passes when `optional`."""
    if value is None and optional:
        return
    number(key, value)
    if not value > 0:
        raise ValueError(f"{key}: must be > 0{' (or null)' if optional else ''}, got {value!r}")


def between(key: str, value, low, high, *, open_low: bool = False, open_high: bool = False) -> None:
    """low <= value <= high, each bound left out when open."""
    number(key, value)
    ok = (value > low if open_low else value >= low) and (value < high if open_high else value <= high)
    if not ok:
        interval = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
        raise ValueError(f"{key}: must be in {interval}, got {value!r}")


def one_of(key: str, value, choices: Iterable) -> None:
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{key}: must be one of {choices}, got {value!r}")


def all_known(key: str, values, choices: Iterable, *, nonempty: bool = True) -> None:
    """Every item of the list `values` is in `choices` (and there is at least one)."""
    choices = list(choices)
    if isinstance(values, str):
        raise ValueError(f"{key}: must be a list, got {values!r}")
    unknown = [v for v in values if v not in choices]
    if unknown:
        raise ValueError(f"{key}: unknown {unknown}; choose from {choices}")
    if nonempty and not values:
        raise ValueError(f"{key}: must not be empty; choose from {choices}")


def all_at_least(key: str, values, low, *, nonempty: bool = True) -> None:
    """Every item of the list `values` is a number >= low (and there is at least one)."""
    if nonempty and not values:
        raise ValueError(f"{key}: must not be empty")
    for i, v in enumerate(values):
        at_least(f"{key}[{i}]", v, low)
