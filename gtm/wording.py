"""Counted nouns in what people read: "1 change", "2 changes", never "1 changes"."""

from __future__ import annotations


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """The noun alone, in the form ``count`` takes."""
    if count == 1:
        return singular
    return plural_form if plural_form is not None else f"{singular}s"


def counted(count: int, singular: str, plural_form: str | None = None) -> str:
    """``count`` and its noun: ``counted(1, "zone")`` is "1 zone"."""
    return f"{count} {plural(count, singular, plural_form)}"
