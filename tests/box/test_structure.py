"""The box's rooms: who may import the agent, what the web layer may ask of it, and an agent that
does nothing until it is started.

The web layer once imported the agent that imports it; it now sees the agent only through
``lanlock.box.ports.AgentPort``. These checks read the source, so a new import or a new use of the
agent fails here rather than in review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import lanlock
from lanlock.box.agent import Agent, BoxSettings
from lanlock.box.ports import AgentPort

PACKAGE = Path(lanlock.__file__).parent
BOX = PACKAGE / "box"
# The command line runs the agent; nothing else of the box may depend on it.
MAY_IMPORT_THE_AGENT = {"cli.py"}
ROLES = ("box", "console", "cloud", "dns", "store")


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (inside functions and TYPE_CHECKING too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def port_members() -> set[str]:
    return {name for name in vars(AgentPort) if not name.startswith("_")}


def test_only_the_command_line_imports_the_agent():
    importers = {
        path.name for path in BOX.glob("*.py") if "lanlock.box.agent" in imported_modules(path)
    }
    assert importers <= MAY_IMPORT_THE_AGENT


def test_the_web_layer_asks_the_agent_only_what_its_port_lists():
    used = set()
    for node in ast.walk(ast.parse((BOX / "web.py").read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and ast.unparse(node.value) in ("agent", "self.agent"):
            used.add(node.attr)
    assert used == port_members()


def test_the_agent_has_all_its_port_lists():
    annotated = set(Agent.__annotations__)
    missing = {name for name in port_members() if not hasattr(Agent, name)} - annotated
    assert not missing


def test_building_an_agent_touches_no_file(tmp_path):
    folder = tmp_path / "box"
    Agent(BoxSettings(data_dir=folder))
    assert not folder.exists()


def test_the_console_messages_import_no_role():
    for module in ("console_wire.py", "wire.py"):
        roles = {
            name
            for name in imported_modules(PACKAGE / module)
            if name.startswith(tuple(f"lanlock.{role}" for role in ROLES))
        }
        assert not roles, module
