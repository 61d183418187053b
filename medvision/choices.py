"""Options given as enums that also accept their names as text, with "did you mean" errors."""

from __future__ import annotations

import difflib
from enum import StrEnum
from typing import TypeVar

ChoiceT = TypeVar("ChoiceT", bound=StrEnum)


def parse_choice(choices: type[ChoiceT], text: str, what: str) -> ChoiceT:
    """Return the member of ``choices`` named ``text`` (case and spaces ignored).

    Parameters
    ----------
    choices
        A string enum.
    text
        The name given by a user or a file.
    what
        What the choice is, for the error message (e.g. ``"modality"``).

    Raises
    ------
    ValueError
        If ``text`` names no member; the message lists the members and suggests
        the closest one.
    """
    name = text.strip().lower()
    try:
        return choices(name)
    except ValueError:
        names = [member.value for member in choices]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(
            f"unknown {what} '{text}': expected one of {', '.join(names)}.{hint}"
        ) from None
