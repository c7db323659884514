"""Settings: environment, sentinel.toml, frozen, strict about unknown keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from cluster.config import DEFAULT_UNIVERSE, Settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for key in list(__import__("os").environ):
        if key.startswith("SENTINEL_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_defaults_put_the_store_under_dot_sentinel():
    s = Settings()
    assert s.store_path == Path(".sentinel") / "sentinel.duckdb"
    assert s.universe == DEFAULT_UNIVERSE
    # every live feed's default symbols are known, so a fresh install quarantines none of them
    from cluster.sources import LIVE_DEFAULT_SYMBOLS

    for feed, symbols in LIVE_DEFAULT_SYMBOLS.items():
        assert set(symbols) <= set(DEFAULT_UNIVERSE), feed
    assert s.bar_intervals_ns == (10**9, 60 * 10**9)


def test_environment_overrides_with_prefix_and_comma_lists(monkeypatch, tmp_path):
    monkeypatch.setenv("SENTINEL_DATA_DIR", str(tmp_path / "x"))
    monkeypatch.setenv("SENTINEL_UNIVERSE", "SPY, QQQ")
    s = Settings()
    assert s.data_dir == tmp_path / "x"
    assert s.universe == ("SPY", "QQQ")
    assert s.validation().universe == frozenset({"SPY", "QQQ"})


def test_toml_file_is_read_and_environment_wins_over_it(monkeypatch, tmp_path):
    (tmp_path / "sentinel.toml").write_text('data_dir = "from-toml"\nbatch_rows = 123\n')
    monkeypatch.setenv("SENTINEL_BATCH_ROWS", "7")
    s = Settings()
    assert s.data_dir == Path("from-toml")
    assert s.batch_rows == 7


def test_unknown_key_in_toml_is_an_error(tmp_path):
    (tmp_path / "sentinel.toml").write_text("no_such_setting = 1\n")
    with pytest.raises(ValidationError, match="no_such_setting"):
        Settings()


def test_settings_are_frozen():
    s = Settings()
    with pytest.raises(ValidationError):
        s.batch_rows = 5


@pytest.mark.parametrize(
    ("field", "value"),
    [("bar_intervals", "1s,soon"), ("universe", "SPY,bad symbol"), ("replay_speed", -1), ("batch_rows", 0)],
)
def test_bad_values_are_refused_naming_field_and_value(field: str, value: object):
    with pytest.raises(ValidationError) as info:
        Settings.model_validate({field: value})
    assert field in str(info.value)


def test_secrets_never_appear_in_repr_or_public_view(monkeypatch):
    monkeypatch.setenv("SENTINEL_DATABASE_URL", "postgresql://sentinel:hunter2@127.0.0.1:5432/db")
    monkeypatch.setenv("SENTINEL_REDIS_URL", "redis://:s3cret@127.0.0.1:6379/0")
    s = Settings(store="postgres", buffer="redis")
    assert s.database_url is not None
    assert "hunter2" in s.database_url.get_secret_value()
    for text in (repr(s), str(s), str(s.public())):
        assert "hunter2" not in text
        assert "s3cret" not in text


def test_a_server_backend_without_its_url_is_refused_naming_the_setting():
    with pytest.raises(ValidationError, match="database_url"):
        Settings(store="postgres")
