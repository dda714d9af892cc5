"""Settings: flag > environment > file > default (docs/design.md §13), seen through the real
command line.

The observable value is the store: four SQLite stores each hold one differently named database,
and `lanlock cloud database list --json` shows which store the command used. Where a command
would start a server, its callback is replaced and the values it would have been given are
looked at instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from lanlock import defaults
from lanlock.cli import ROLES, main
from lanlock.cloud import admin
from lanlock.cloud.models import cloud_store
from lanlock.config import UNSCOPED_OPTIONS, default_data_dir
from tests.test_cli_imports import HEAVY, loaded_by

# Settings the developer's own shell (or the test run's) might hold must not leak into these tests.
# LANLOCK_HOME stays: the isolated_home fixture sets it for every test.
CLEAN_ENV: dict[str, str | None] = {
    name: None for name in os.environ if name.startswith("LANLOCK_") and name != "LANLOCK_HOME"
}
ACTION_FLAGS = {"--json", "--clear", "--reset"}  # one-shot actions, not settings


@pytest.fixture(autouse=True)
def isolated_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing a test does lands in the user's own data folder."""
    monkeypatch.setenv("LANLOCK_HOME", str(tmp_path / "isolated-home"))


def make_store(path: Path, database: str) -> str:
    url = f"sqlite:///{path}"
    store = cloud_store(url, pool_size=1)
    try:
        store.migrate()
        admin.add_database(store, database)
    finally:
        store.dispose()
    return url


def lanlock(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env={**CLEAN_ENV, **(env or {})})


def command_at(*path: str) -> click.Command:
    command: click.Command = main
    for word in path:
        assert isinstance(command, click.Group)
        found = command.get_command(click.Context(command), word)
        assert found is not None, word
        command = found
    return command


def given_to(
    monkeypatch: pytest.MonkeyPatch,
    path: tuple[str, ...],
    config: Path | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The values ``lanlock [--config FILE] <path>`` hands its command, which is not run."""
    seen: dict[str, Any] = {}
    monkeypatch.setattr(command_at(*path), "callback", lambda **values: seen.update(values))
    top = ("--config", str(config)) if config else ()
    result = lanlock(*top, *path, env=env)
    assert result.exit_code == 0, result.output
    return seen


def every_command() -> list[tuple[tuple[str, ...], click.Command]]:
    found: list[tuple[tuple[str, ...], click.Command]] = []

    def walk(path: tuple[str, ...], command: click.Command) -> None:
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk((*path, name), sub)
        else:
            found.append((path, command))

    for role in ROLES:
        walk((role,), command_at(role))
    return found


def assert_one_line_error(result: Result, *fragments: str) -> str:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def listed(result: Result) -> list[str]:
    assert result.exit_code == 0, result.output
    return [row["uuid"] for row in json.loads(result.stdout)]


def assert_config_error(result: Result, *fragments: str) -> None:
    """One clear line, exit status 1, and no traceback."""
    assert assert_one_line_error(result, *fragments).startswith("Error: settings file")


@pytest.fixture
def layers(tmp_path: Path) -> dict[str, object]:
    """A store for each layer, and the flag, environment and file that name them."""
    home = tmp_path / "home"
    default_url = make_store(home / "cloud" / "cloud.db", "from-default")
    file_url = make_store(tmp_path / "file.db", "from-file")
    env_url = make_store(tmp_path / "env.db", "from-env")
    flag_url = make_store(tmp_path / "flag.db", "from-flag")
    config = tmp_path / "lanlock.toml"
    config.write_text(f'[cloud]\nstore = "{file_url}"\n')
    return {
        "home": str(home),
        "config": str(config),
        "default": default_url,
        "file": file_url,
        "env": env_url,
        "flag": flag_url,
    }


@pytest.mark.parametrize(
    ("given", "winner"),
    [
        (("flag", "env", "file"), "from-flag"),
        (("flag", "file"), "from-flag"),
        (("flag", "env"), "from-flag"),
        (("env", "file"), "from-env"),
        (("file",), "from-file"),
        ((), "from-default"),
    ],
)
def test_store_comes_from_the_highest_layer_given(layers, given, winner):
    env = {"LANLOCK_HOME": layers["home"]}
    args: list[str] = []
    if "file" in given:
        args += ["--config", layers["config"]]
    args += ["cloud", "database", "list", "--json"]
    if "env" in given:
        env["LANLOCK_CLOUD_STORE"] = layers["env"]
    if "flag" in given:
        args += ["--store", layers["flag"]]
    assert listed(lanlock(*args, env=env)) == [winner]


def test_settings_file_named_by_the_environment(layers):
    env = {"LANLOCK_HOME": layers["home"], "LANLOCK_CONFIG": layers["config"]}
    assert listed(lanlock("cloud", "database", "list", "--json", env=env)) == ["from-file"]


def test_config_flag_beats_the_config_environment_variable(layers, tmp_path):
    other = tmp_path / "other.toml"
    other.write_text(f'[cloud]\nstore = "{layers["env"]}"\n')
    env = {"LANLOCK_HOME": layers["home"], "LANLOCK_CONFIG": layers["config"]}
    result = lanlock("--config", str(other), "cloud", "database", "list", "--json", env=env)
    assert listed(result) == ["from-env"]


def test_a_table_of_another_role_does_not_touch_the_cloud(layers, tmp_path):
    config = tmp_path / "dns-only.toml"
    config.write_text(f'[dns]\nstore = "{layers["file"]}"\n\n[box]\ndata = "/nonexistent"\n')
    env = {"LANLOCK_HOME": layers["home"]}
    result = lanlock("--config", str(config), "cloud", "database", "list", "--json", env=env)
    assert listed(result) == ["from-default"]


def test_data_folder_from_the_file_moves_the_default_store(tmp_path):
    data = tmp_path / "cloud-data"
    make_store(data / "cloud.db", "in-data-folder")
    config = tmp_path / "lanlock.toml"
    config.write_text(f'[cloud]\ndata = "{data}"\n')
    env = {"LANLOCK_HOME": str(tmp_path / "unused-home")}
    result = lanlock("--config", str(config), "cloud", "database", "list", "--json", env=env)
    assert listed(result) == ["in-data-folder"]
    # … and LANLOCK_CLOUD_DATA beats the file.
    elsewhere = tmp_path / "elsewhere"
    make_store(elsewhere / "cloud.db", "in-env-data-folder")
    env["LANLOCK_CLOUD_DATA"] = str(elsewhere)
    result = lanlock("--config", str(config), "cloud", "database", "list", "--json", env=env)
    assert listed(result) == ["in-env-data-folder"]


def test_default_store_is_made_under_lanlock_home(tmp_path):
    home = tmp_path / "home"
    result = lanlock("cloud", "database", "add", "fresh-db", env={"LANLOCK_HOME": str(home)})
    assert result.exit_code == 0, result.output
    assert (home / "cloud" / "cloud.db").is_file()
    result = lanlock("cloud", "database", "list", "--json", env={"LANLOCK_HOME": str(home)})
    assert listed(result) == ["fresh-db"]


# --- each role its own variables -----------------------------------------------------------------


def test_every_option_reads_its_roles_variable_and_help_names_it():
    for path, command in every_command():
        shown = lanlock(*path, "--help")
        assert shown.exit_code == 0, shown.output
        for option in command.params:
            if not isinstance(option, click.Option) or ACTION_FLAGS & set(option.opts):
                continue
            name = option.opts[0].removeprefix("--").upper().replace("-", "_")
            variable = f"LANLOCK_{path[0].upper()}_{name}"
            assert option.envvar and option.envvar[0] == variable, (path, option.opts)
            assert option.hidden or variable in shown.output, (path, variable)


def test_each_role_reads_its_own_store_variable(monkeypatch):
    env = {
        "LANLOCK_CLOUD_STORE": "sqlite:///cloud.db",
        "LANLOCK_CONSOLE_STORE": "sqlite:///console.db",
        "LANLOCK_DNS_STORE": "sqlite:///dns.db",
    }
    for role in ("cloud", "console", "dns"):
        seen = given_to(monkeypatch, (role, "serve"), env=env)
        assert seen["store"] == f"sqlite:///{role}.db", role


def test_a_role_variable_does_not_move_another_role(monkeypatch):
    env = {"LANLOCK_CLOUD_STORE": "sqlite:///cloud.db", "LANLOCK_CLOUD_PORT": "9999"}
    assert given_to(monkeypatch, ("cloud", "serve"), env=env)["port"] == 9999
    for role in ("console", "dns"):
        seen = given_to(monkeypatch, (role, "serve"), env=env)
        assert seen["store"] is None, role
        assert seen["port"] != 9999, role


def test_the_zone_spans_the_cloud_and_the_dns_and_a_role_variable_beats_it(monkeypatch):
    env = {"LANLOCK_ZONE": "iot.example.com"}
    for path in (("cloud", "serve"), ("dns", "serve"), ("demo",)):
        assert given_to(monkeypatch, path, env=env)["zone"] == "iot.example.com", path
    env["LANLOCK_DNS_ZONE"] = "iot.example.net"
    assert given_to(monkeypatch, ("dns", "serve"), env=env)["zone"] == "iot.example.net"
    assert given_to(monkeypatch, ("cloud", "serve"), env=env)["zone"] == "iot.example.com"
    assert "LANLOCK_ZONE" in lanlock("dns", "serve", "--help").output


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("LANLOCK_STORE", ["LANLOCK_CLOUD_STORE", "LANLOCK_CONSOLE_STORE", "LANLOCK_DNS_STORE"]),
        ("LANLOCK_PORT", ["LANLOCK_CLOUD_PORT", "LANLOCK_CONSOLE_PORT", "LANLOCK_DNS_PORT"]),
        ("LANLOCK_DATA", ["LANLOCK_BOX_DATA", "LANLOCK_CLOUD_DATA", "LANLOCK_DEMO_DATA"]),
        ("LANLOCK_METRICS_TOKEN", ["LANLOCK_CLOUD_METRICS_TOKEN"]),
        ("LANLOCK_CLOUD", ["LANLOCK_BOX_CLOUD"]),
    ],
)
def test_an_old_unscoped_variable_is_refused_naming_the_new_ones(old, new):
    result = lanlock("cloud", "database", "list", env={old: "anything"})
    assert_one_line_error(result, old, *new)


def test_old_unscoped_variables_name_variables_that_exist():
    read = {
        variable
        for _, command in every_command()
        for option in command.params
        for variable in (option.envvar or ())
    }
    for option, roles in UNSCOPED_OPTIONS.items():
        old = "LANLOCK_" + option.upper().replace("-", "_")
        assert old not in read, old
        for role in roles:
            assert f"LANLOCK_{role.upper()}_{old.removeprefix('LANLOCK_')}" in read, (old, role)


def test_variables_of_the_tests_and_tools_are_left_alone(layers):
    env = {
        "LANLOCK_HOME": layers["home"],
        "LANLOCK_TEST_STRICT": "1",
        "LANLOCK_FUZZ_EXAMPLES": "10",
        "LANLOCK_VENV": ".venv",
        "LANLOCK_BENCH_POSTGRES_URL": "postgresql+psycopg://x@h/d",
    }
    assert listed(lanlock("cloud", "database", "list", "--json", env=env)) == ["from-default"]


def test_a_misspelt_variable_of_the_role_that_runs_is_refused():
    result = lanlock("cloud", "database", "list", env={"LANLOCK_CLOUD_PROT": "9999"})
    assert_one_line_error(result, "LANLOCK_CLOUD_PROT", "LANLOCK_CLOUD_PORT")


# --- what a settings file may say ---------------------------------------------------------------


def test_file_keys_are_option_names_as_help_shows_them(monkeypatch, tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("a CA bundle\n")
    config = tmp_path / "lanlock.toml"
    config.write_text(f'[box]\ncloud = "https://cloud.example.com"\ncloud-ca = "{bundle}"\n')
    seen = given_to(monkeypatch, ("box", "run"), config=config)
    assert seen["cloud_url"] == "https://cloud.example.com"
    assert seen["cloud_ca"] == str(bundle)


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        pytest.param('[box]\ncloud_url = "https://x"\n', ["[box]", "cloud_url"], id="python-name"),
        pytest.param("[box]\nprot = 1\n", ["[box]", "prot"], id="unknown"),
        pytest.param("[box]\njson = true\n", ["[box]", "json"], id="an-action-flag"),
    ],
)
def test_unknown_key_is_an_error_listing_the_valid_ones(tmp_path, content, fragments):
    config = tmp_path / "lanlock.toml"
    config.write_text(content)
    result = lanlock("--config", str(config), "box", "status", "--data", str(tmp_path))
    assert_config_error(result, str(config), *fragments, "cloud, cloud-ca,", "retry-cap")


def test_reading_the_file_loads_no_other_role(tmp_path):
    config = tmp_path / "lanlock.toml"
    config.write_text('[cloud]\nstore = "sqlite:///x.db"\n\n[dns]\nzone = "iot.test"\n')
    args = ("--config", str(config), "box", "status", "--json", "--data", str(tmp_path))
    assert loaded_by(*args) & HEAVY == set()


# --- admin commands read what the store records ---------------------------------------------------


def test_ca_root_takes_the_zone_from_the_store(tmp_path):
    data = ("--data", str(tmp_path / "cloud"))
    made = json.loads(lanlock("cloud", "ca", "root", *data, "--zone", "iot.test", "--json").stdout)
    result = lanlock("cloud", "ca", "root", *data, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == made
    assert made["zone"] == "iot.test"


def test_ca_root_of_an_empty_store_makes_the_ca_for_the_default_zone(tmp_path):
    result = lanlock("cloud", "ca", "root", "--data", str(tmp_path / "cloud"), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["zone"] == defaults.ZONE


# --- files that cannot be used ------------------------------------------------------------------


def test_missing_settings_file(tmp_path):
    missing = tmp_path / "missing.toml"
    assert_config_error(
        lanlock("--config", str(missing), "cloud", "database", "list"),
        str(missing),
        "does not exist",
    )
    assert_config_error(
        lanlock("cloud", "database", "list", env={"LANLOCK_CONFIG": str(missing)}),
        str(missing),
        "does not exist",
    )


ROLE_TABLES = "box, cloud, console, demo, dns"


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        pytest.param(b"[cloud\nstore = 1\n", ["cannot be read"], id="syntax"),
        pytest.param(b"store = [\n", ["cannot be read"], id="unfinished"),
        pytest.param(b"[clud]\nport = 8700\n", ["[clud]", ROLE_TABLES], id="unknown-table"),
        pytest.param(
            b'store = "sqlite:///x.db"\n', ["store", ROLE_TABLES], id="key-outside-a-table"
        ),
        pytest.param(b"cloud = 5\n", ["cloud", ROLE_TABLES], id="role-not-a-table"),
    ],
)
def test_settings_file_that_is_not_a_lanlock_toml_file(tmp_path, content, fragments):
    config = tmp_path / "bad.toml"
    config.write_bytes(content)
    assert_config_error(
        lanlock("--config", str(config), "cloud", "database", "list"), str(config), *fragments
    )


@pytest.mark.parametrize(
    "content",
    [
        # What Windows Notepad writes when told "Unicode": UTF-16 with a byte-order mark.
        pytest.param("[cloud]\nport = 8700\n".encode("utf-16"), id="utf-16"),
        pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", id="binary"),
    ],
)
def test_settings_file_that_is_not_utf8_text(tmp_path, content):
    config = tmp_path / "lanlock.toml"
    config.write_bytes(content)
    assert_config_error(lanlock("--config", str(config), "cloud", "database", "list"), str(config))


# --- where data lives by default ----------------------------------------------------------------


def test_default_data_dir_honours_lanlock_home(monkeypatch, tmp_path):
    monkeypatch.setenv("LANLOCK_HOME", str(tmp_path))
    assert default_data_dir("cloud") == tmp_path / "cloud"
    assert default_data_dir("box") == tmp_path / "box"


def test_default_data_dir_without_lanlock_home_is_per_user(monkeypatch, tmp_path):
    monkeypatch.delenv("LANLOCK_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "appdata"))
    found = default_data_dir("console")
    assert found.parts[-2:] == ("lanlock", "console")
    assert found.is_relative_to(tmp_path)
