"""Settings: flag > environment > file > default (DESIGN §10), seen through the real command line.

The observable value is the store: four SQLite stores each hold one differently named database,
and `lanlock cloud database list --json` shows which store the command used.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from lanlock.cli import main
from lanlock.cloud import admin
from lanlock.config import default_data_dir
from lanlock.store import Store

# Settings the developer's own shell might hold must not leak into these tests.
CLEAN_ENV: dict[str, str | None] = {
    "LANLOCK_STORE": None,
    "LANLOCK_DATA": None,
    "LANLOCK_CONFIG": None,
    "LANLOCK_ZONE": None,
}


@pytest.fixture(autouse=True)
def isolated_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing a test does lands in the user's own data folder."""
    monkeypatch.setenv("LANLOCK_HOME", str(tmp_path / "isolated-home"))


def make_store(path: Path, database: str) -> str:
    url = f"sqlite:///{path}"
    store = Store(url, pool_size=1)
    try:
        store.migrate()
        admin.add_database(store, database)
    finally:
        store.dispose()
    return url


def lanlock(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env={**CLEAN_ENV, **(env or {})})


def listed(result: Result) -> list[str]:
    assert result.exit_code == 0, result.output
    return [row["uuid"] for row in json.loads(result.stdout)]


def assert_config_error(result: Result, *fragments: str) -> None:
    """One clear line, exit status 1, and no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: settings file"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.output


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
        env["LANLOCK_STORE"] = layers["env"]
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
    # … and LANLOCK_DATA beats the file.
    elsewhere = tmp_path / "elsewhere"
    make_store(elsewhere / "cloud.db", "in-env-data-folder")
    env["LANLOCK_DATA"] = str(elsewhere)
    result = lanlock("--config", str(config), "cloud", "database", "list", "--json", env=env)
    assert listed(result) == ["in-env-data-folder"]


def test_default_store_is_made_under_lanlock_home(tmp_path):
    home = tmp_path / "home"
    result = lanlock("cloud", "database", "add", "fresh-db", env={"LANLOCK_HOME": str(home)})
    assert result.exit_code == 0, result.output
    assert (home / "cloud" / "cloud.db").is_file()
    result = lanlock("cloud", "database", "list", "--json", env={"LANLOCK_HOME": str(home)})
    assert listed(result) == ["fresh-db"]


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


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        pytest.param(b"[cloud\nstore = 1\n", "cannot be read", id="syntax"),
        pytest.param(b"store = [\n", "cannot be read", id="unfinished"),
        pytest.param(b"[clud]\nport = 8700\n", "clud", id="unknown-table"),
        pytest.param(b'store = "sqlite:///x.db"\n', "top-level tables", id="key-outside-a-table"),
        pytest.param(b"cloud = 5\n", "top-level tables", id="role-not-a-table"),
    ],
)
def test_settings_file_that_is_not_a_lanlock_toml_file(tmp_path, content, fragment):
    config = tmp_path / "bad.toml"
    config.write_bytes(content)
    assert_config_error(
        lanlock("--config", str(config), "cloud", "database", "list"), str(config), fragment
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
