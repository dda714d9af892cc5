"""No dependency in a version with a published advisory, declared or installed.

``pip-audit`` needs pypi.org's JSON API or osv.dev, which neither this machine nor CI can reach
(only the package index's simple pages answer here), so the advisories that concern lanlock's
dependencies are kept in this table, with the first version that fixes them: the declared
ranges in pyproject.toml must start at or above it, and the resolved set in the test venv must
be at or above it. Add a row when an advisory is published.
"""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]

FIXED_IN = {
    "cryptography": ("44.0.1", "CVE-2024-12797 (OpenSSL in the wheels)"),
    "dnspython": ("2.6.1", "CVE-2023-29483 (TuDoor)"),
    "starlette": ("0.49.1", "CVE-2025-54121, CVE-2025-62727"),
    "jinja2": ("3.1.6", "CVE-2025-27516 (sandbox escape through |attr)"),
    "requests": ("2.32.4", "CVE-2024-47081 (.netrc credentials leak)"),
    "urllib3": ("2.5.0", "CVE-2025-50181, CVE-2025-50182 (redirects)"),
    "h11": ("0.16.0", "CVE-2025-43859 (request smuggling)"),
}


def declared(name: str) -> list[Requirement]:
    """Every requirement on ``name``: the floor's, and each role's extra's."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"].values()
    lines = [*project["dependencies"], *(line for extra in extras for line in extra)]
    return [r for r in map(Requirement, lines) if r.name.lower() == name]


@pytest.mark.parametrize("name", sorted(FIXED_IN))
def test_the_declared_range_starts_past_the_advisory(name):
    fixed, advisory = FIXED_IN[name]
    requirements = declared(name)
    assert requirements, f"{name} must be declared with a floor past {advisory}"
    for requirement in requirements:
        floors = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==")]
        assert floors and max(floors) >= Version(fixed), (
            f"{requirement}: raise to >={fixed} ({advisory})"
        )


@pytest.mark.parametrize("name", sorted(FIXED_IN))
def test_the_installed_version_is_past_the_advisory(name):
    fixed, advisory = FIXED_IN[name]
    assert Version(version(name)) >= Version(fixed), f"{name} {version(name)}: {advisory}"
