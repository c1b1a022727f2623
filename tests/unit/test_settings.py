"""Settings are data: each one is documented in docs/configuration.md."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from heliosdb.cli import _FLAGS
from heliosdb.settings import Settings, iter_fields, load_settings, masked, revealed

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
DOCUMENTED = set(re.findall(r"^\| `([a-z0-9_.]+)` \|", DOCS.read_text(), re.M))


@pytest.mark.parametrize("name", [name for name, _ in iter_fields()])
def test_setting_is_documented(name: str) -> None:
    assert name in DOCUMENTED, f"add a row for `{name}` to docs/configuration.md"


@pytest.mark.parametrize("name", [name for name, _ in iter_fields()])
def test_setting_has_help_text(name: str) -> None:
    help_text = dict(iter_fields())[name]
    assert help_text.strip(), f"give `{name}` a Field(description=...) in settings.py"


@pytest.mark.parametrize("dotted", sorted(set(_FLAGS.values())))
def test_flag_targets_a_setting(dotted: str) -> None:
    assert dotted in {name for name, _ in iter_fields()}


@pytest.fixture(autouse=True)
def _no_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Settings read ./heliosdb.yaml; run where there is none.
    monkeypatch.chdir(tmp_path)


def test_environment_overrides_nested_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELIOSDB_HTTP__PORT", "9123")
    monkeypatch.setenv("HELIOSDB_ENGINE__QUERY_TIMEOUT", "2.5")
    settings = load_settings()
    assert settings.http.port == 9123
    assert settings.engine.query_timeout == 2.5


def test_flag_overrides_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELIOSDB_HTTP__PORT", "9123")
    flags: dict[str, Any] = {"http.port": 9200}
    assert load_settings(**flags).http.port == 9200


def test_defaults() -> None:
    settings = Settings()
    assert settings.http.port == 8080
    assert settings.engine.query_timeout == 30.0
    assert settings.environment == "production"


def test_revealed_settings_read_back_exactly_with_their_secrets() -> None:
    # What the node writes to its worker processes' stdin (workers.py).
    settings = load_settings(
        None, **{"engine.url": "postgresql://u:s3cret@/db?host=/run", "workers": 3}
    )
    again = Settings.model_validate(revealed(settings))
    assert again == settings
    assert again.engine.url is not None
    assert again.engine.url.get_secret_value() == "postgresql://u:s3cret@/db?host=/run"
    assert "s3cret" not in str(masked(settings))
