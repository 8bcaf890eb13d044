"""No module reaches into another package's private names.

import-linter checks the direction of imports (.importlinter); it cannot see *what* is
imported. A name starting with ``_`` is private to the package that defines it: another
package importing it (``from gtm.steering.definitions import _check``) or reading it
off an imported module (``control_cli._client_options``) couples to something its
owner may change at will. Inside one package it is fine.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gtm", "regional_lb")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(module: str) -> str:
    """gtm.control.api -> gtm.control; gtm.cli -> gtm."""
    return module.rpartition(".")[0] or module


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_reaches(path: Path, root: Path = ROOT) -> list[str]:
    """Each `from X import _y` and `alias._y` where X (alias) is another package's module."""
    here = module_name(path, root)
    found = []
    aliases: dict[str, str] = {}  # local name -> module it stands for
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith(PACKAGES):
                continue
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                aliases[alias.asname or alias.name] = target
                if is_private(alias.name) and package_of(node.module) != package_of(here):
                    found.append(f"{path.relative_to(root)}:{node.lineno}: "
                                 f"from {node.module} import {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PACKAGES) and alias.asname:
                    aliases[alias.asname] = alias.name
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (isinstance(node, ast.Attribute) and is_private(node.attr)
                and isinstance(node.value, ast.Name) and node.value.id in aliases):
            owner = aliases[node.value.id]
            if package_of(owner) != package_of(here):
                found.append(f"{path.relative_to(root)}:{node.lineno}: "
                             f"{node.value.id}.{node.attr} ({owner})")
    return found


def product_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_no_module_imports_another_packages_private_names() -> None:
    assert product_files(), "no product files found: is ROOT right?"
    reaches = [line for path in product_files() for line in private_reaches(path)]
    assert reaches == []


@pytest.mark.parametrize(("source", "expected"), [
    ("from gtm.steering.definitions import _check\n", 1),   # across packages
    ("from regional_lb.tls.store import _x\n", 0),          # same package: allowed
    ("from gtm.control import cli as c\nc._client_options()\n", 1),
    ("from gtm.control import cli as c\nc.client_options()\n", 0),
    ("from gtm.health.quorum import __version__\n", 0),     # dunders are not private
])
def test_the_check_sees_a_private_reach(tmp_path: Path, source: str, expected: int) -> None:
    probe = tmp_path / "regional_lb" / "tls" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text(source)
    assert len(private_reaches(probe, tmp_path)) == expected
