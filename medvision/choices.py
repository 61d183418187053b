"""Options given as enums that also accept their names as text, with "did you mean" errors."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from enum import StrEnum
from typing import TypeVar

ChoiceT = TypeVar("ChoiceT", bound=StrEnum)


def did_you_mean(name: str, names: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest of ``names``, or an empty string."""
    close = difflib.get_close_matches(name, list(names), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def parse_choice(choices: type[ChoiceT], value: ChoiceT | str, what: str) -> ChoiceT:
    """Return the member of ``choices`` that ``value`` is or names (case and spaces ignored).

    Parameters
    ----------
    choices
        A string enum.
    value
        A member, or the name given by a user or a file.
    what
        What the choice is, for the error message (e.g. ``"modality"``).

    Raises
    ------
    ValueError
        If ``value`` names no member; the message lists the members and suggests
        the closest one.
    """
    if isinstance(value, choices):
        return value
    name = str(value).strip().lower()
    names = [member.value for member in choices]
    if name in names:
        return choices(name)
    expected = ", ".join(names)
    hint = did_you_mean(name, names)
    raise ValueError(f"unknown {what} '{value}': expected one of {expected}.{hint}")
