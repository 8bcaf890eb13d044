"""Validators of the document's sections that live outside gtm, found by entry point.

A package that owns a section of the control plane's document (regional_lb owns ``lb``)
names its validator in the ``gtm.sections`` entry-point group of its pyproject.toml::

    [project.entry-points."gtm.sections"]
    lb = "regional_lb.sections:validate_lb"

gtm.config.document calls it at every compile (the API before storing, every node
before serving), so a section is checked by its owner's own compiler while gtm imports
nothing of the owner (the `gtm.cli` entry points do the same for subcommands). A package
that is not installed registers nothing: its section keeps the permissive default.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from gtm import log

SECTIONS_GROUP = "gtm.sections"

# validator(value, source, path) -> the compiled section, or raise ConfigError whose
# ``where`` starts with ``path``.
SectionValidator = Callable[[Any, str, str], Any]


def valid_section_name(name: str) -> bool:
    return name != "zones" and name.isidentifier()


def discovered_validators() -> dict[str, SectionValidator]:
    """Every validator the installed packages register, by section name.

    One that cannot be loaded is logged and left out: the section is then accepted
    as any object (as without the package), and the nodes that serve it (a balancer
    compiles its own section again) still refuse what they cannot serve. Failing the
    import instead would stop every DNS node and the API over another tier's bug.
    """
    found: dict[str, SectionValidator] = {}
    for entry in sorted(entry_points(group=SECTIONS_GROUP), key=lambda e: e.name):
        if not valid_section_name(entry.name):
            log.control.error("entry point %s names no valid section; ignored", entry)
            continue
        try:
            found[entry.name] = entry.load()
        except Exception:
            log.control.exception("the validator of section %r (%s) cannot be loaded; "
                                  "the section is accepted unchecked", entry.name, entry.value)
    return found
