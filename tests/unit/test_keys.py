"""API keys: created once in plain text, stored only as salted HMACs, verified per request, revoked across processes."""

from __future__ import annotations

import os
import pickle
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cluster.cli import app
from serve_apps.keys import KeyRecord, KeyStore


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("SENTINEL_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore.default(tmp_path / "data")


def test_create_then_verify_returns_the_record(store: KeyStore) -> None:
    record, key = store.create("dashboard")
    assert isinstance(record, KeyRecord)
    assert key.startswith(f"msk_{record.id}_")
    assert len(record.id) == 8
    int(record.id, 16)
    assert record.prefix == key[:12] == f"msk_{record.id}"
    assert record.name == "dashboard"
    assert record.revoked is None
    assert record.active
    assert datetime.fromisoformat(record.created).tzinfo is not None
    assert store.verify(key) == record
    assert store.path == store.path.parent / "api_keys.json"


def test_each_key_is_different_and_verifies_as_its_own_record(store: KeyStore) -> None:
    created = [store.create(f"client {i}") for i in range(5)]
    assert len({key for _, key in created}) == 5
    for record, key in created:
        assert store.verify(key) == record


def test_a_key_with_a_wrong_secret_is_refused(store: KeyStore) -> None:
    _, key = store.create("a")
    last = "A" if key[-1] != "A" else "B"
    assert store.verify(key[:-1] + last) is None
    other_record, other_key = store.create("b")
    # the right id with another key's secret
    assert store.verify(key[:13] + other_key[13:]) is None
    assert store.verify(other_key) == other_record


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "msk",
        "msk_",
        "nounderscoresatallbutexactlyfiftysixcharacterslongxxxxxx",
        "msk_zzzzzzzz_" + "a" * 43,
        "MSK_0123abcd_" + "a" * 43,
        "msk_0123ABCD_" + "a" * 43,
        "msk_0123abcd_" + "a" * 42 + "é",
        "msk_0123abcd_" + "a" * 42 + "=",
        "msk_０１２３abcd_" + "a" * 43,
        "msk_0123abcd_" + "a" * 10_000,
        "x" * 1_000_000,
    ],
)
def test_malformed_strings_are_refused(store: KeyStore, presented: str) -> None:
    store.create("a")
    assert store.verify(presented) is None


def test_non_strings_are_refused(store: KeyStore) -> None:
    _, key = store.create("a")
    assert store.verify(key.encode()) is None  # type: ignore[arg-type]
    assert store.verify(None) is None  # type: ignore[arg-type]


def test_a_well_formed_key_with_an_unknown_id_is_refused(store: KeyStore) -> None:
    record, key = store.create("a")
    unknown = "00000000" if record.id != "00000000" else "11111111"
    assert store.verify(f"msk_{unknown}_{key[13:]}") is None
    # an empty or missing store refuses everything
    assert KeyStore(store.path.parent / "none.json").verify(key) is None


def test_a_revoked_key_is_refused(store: KeyStore) -> None:
    record, key = store.create("a")
    kept, kept_key = store.create("b")
    revoked = store.revoke(record.id)
    assert revoked.revoked is not None
    assert not revoked.active
    assert store.verify(key) is None
    assert store.verify(kept_key) == kept


def test_revoking_twice_keeps_the_first_time(tmp_path: Path) -> None:
    times = iter([datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC), datetime(2024, 1, 3, tzinfo=UTC)])
    store = KeyStore(tmp_path / "keys.json", clock=lambda: next(times))
    record, _ = store.create("a")
    assert record.created == "2024-01-01T00:00:00+00:00"
    first = store.revoke(record.id)
    assert first.revoked == "2024-01-02T00:00:00+00:00"
    again = store.revoke(record.id)
    assert again == first
    assert KeyStore(store.path).list() == [first]


def test_a_revocation_by_another_process_takes_effect_on_the_next_verify(store: KeyStore) -> None:
    record, key = store.create("a")
    server = KeyStore(store.path)  # another process's view of the same file
    assert server.verify(key) == record
    KeyStore(store.path).revoke(record.id)  # e.g. `sentinel keys revoke` in a shell
    assert server.verify(key) is None


def test_a_key_created_by_another_process_is_accepted_without_restart(store: KeyStore) -> None:
    server = KeyStore(store.path)
    assert server.list() == []
    record, key = store.create("late")
    assert server.verify(key) == record


def test_changes_keep_records_another_process_added(store: KeyStore) -> None:
    other = KeyStore(store.path)
    a, _ = store.create("a")
    b, _ = other.create("b")
    c, _ = store.create("c")
    assert [r.id for r in KeyStore(store.path).list()] == [a.id, b.id, c.id]


def test_list_is_oldest_first(tmp_path: Path) -> None:
    times = iter([datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC)])
    store = KeyStore(tmp_path / "keys.json", clock=lambda: next(times))
    names = [store.create(n)[0].name for n in ("march", "january", "february")]
    assert names == ["march", "january", "february"]
    assert [r.name for r in store.list()] == ["january", "february", "march"]


def test_the_file_holds_no_key_and_only_its_owner_may_read_it(store: KeyStore) -> None:
    assert not store.path.parent.exists()
    keys = [store.create(f"k{i}")[1] for i in range(3)]
    store.revoke(store.list()[0].id)
    text = store.path.read_text()
    for key in keys:
        assert key not in text
        assert key[13:] not in text  # nor its secret
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert [p.name for p in store.path.parent.iterdir()] == ["api_keys.json"]  # no temporary file left


def test_a_corrupt_file_is_an_error_naming_it_not_an_empty_store(store: KeyStore) -> None:
    store.path.parent.mkdir(parents=True)
    store.path.write_text("{not json")
    with pytest.raises(ValueError, match=r"api_keys\.json"):
        store.list()


@pytest.mark.parametrize("name", ["", " ", "x" * 65, "tab\there", "new\nline", "\x00"])
def test_a_bad_name_is_refused_by_name(store: KeyStore, name: str) -> None:
    with pytest.raises(ValueError, match="name=") as info:
        store.create(name)
    assert repr(name) in str(info.value)
    assert not store.path.exists()


def test_revoking_an_unknown_id_names_it(store: KeyStore) -> None:
    store.create("a")
    with pytest.raises(KeyError, match="deadbeef"):
        store.revoke("deadbeef")


def test_repr_shows_the_path_only_and_pickles_without_its_cache(store: KeyStore) -> None:
    record, key = store.create("a")
    assert repr(store) == f"KeyStore(path={str(store.path)!r})"
    copy = pickle.loads(pickle.dumps(store))
    assert copy.path == store.path
    assert copy.verify(key) == record


def test_cli_creates_lists_and_revokes_keys(tmp_path: Path) -> None:
    runner = CliRunner()
    data = tmp_path / "data"
    res = runner.invoke(app, ["keys", "create", "--name", "grafana", "--data-dir", str(data)])
    assert res.exit_code == 0, res.output
    key = next(line for line in res.output.splitlines() if line.startswith("msk_"))
    assert "will not be shown again" in res.output
    store = KeyStore.default(data)
    record = store.verify(key)
    assert record is not None
    assert record.name == "grafana"
    assert record.id in res.output

    res = runner.invoke(app, ["keys", "list", "--data-dir", str(data)])
    assert res.exit_code == 0, res.output
    assert record.id in res.output
    assert record.prefix in res.output
    assert "grafana" in res.output
    assert key not in res.output

    res = runner.invoke(app, ["keys", "revoke", record.id, "--data-dir", str(data)])
    assert res.exit_code == 0, res.output
    assert record.id in res.output
    assert store.verify(key) is None

    res = runner.invoke(app, ["keys", "list", "--data-dir", str(data)])
    assert res.exit_code == 0, res.output
    assert record.id in res.output
    assert "-" in res.output


def test_cli_list_of_an_empty_store_says_how_to_create_one(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["keys", "list", "--data-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "keys create" in res.output


def test_cli_refuses_an_unknown_id_and_a_bad_name_by_value(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["keys", "revoke", "deadbeef", "--data-dir", str(tmp_path)])
    assert res.exit_code == 2
    assert "deadbeef" in res.output
    res = runner.invoke(app, ["keys", "create", "--name", "x" * 65, "--data-dir", str(tmp_path)])
    assert res.exit_code == 2
    assert "name=" in res.output
