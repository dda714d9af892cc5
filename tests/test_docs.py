"""The documents generated from code stay true to it."""

from pathlib import Path

from lanlock.cli import configuration_guide
from lanlock.errors import markdown_guide

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = (
    ".venv/bin/python -c 'from lanlock.errors import markdown_guide; "
    'print(markdown_guide(), end="")\' > docs/errors.md'
)
REGENERATE_CONFIGURATION = (
    ".venv/bin/python -c 'from lanlock.cli import configuration_guide; "
    'print(configuration_guide(), end="")\' > docs/configuration.md'
)


def test_error_guide_matches_the_catalogue():
    assert (ROOT / "docs" / "errors.md").read_text() == markdown_guide(), (
        f"docs/errors.md is out of date; regenerate it with: {REGENERATE}"
    )


def test_configuration_guide_matches_the_commands():
    assert (ROOT / "docs" / "configuration.md").read_text() == configuration_guide(), (
        f"docs/configuration.md is out of date; regenerate it with: {REGENERATE_CONFIGURATION}"
    )


def test_readme_names_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "./dev demo" in readme and "./dev test" in readme
    assert "./dev test" in (ROOT / ".ci" / "run").read_text()
