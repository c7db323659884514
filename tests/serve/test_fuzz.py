"""Property-based fuzzing of the API from its own OpenAPI document (schemathesis): for generated requests to every
operation, no 5xx, only documented status codes and content types, responses that match their schemas, and a
request without a valid key refused (schemathesis' ``ignored_auth`` check)."""

from __future__ import annotations

from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from ingest.store.duckdb_store import DuckDBStore
from serve_apps.api import create_app
from serve_apps.backend import StoreBackend
from serve_apps.keys import KeyStore
from tests.serve.test_api import _alerts, _bars

_root = Path(__import__("tempfile").mkdtemp(prefix="sentinel-fuzz-"))
_store = DuckDBStore(_root / "history.duckdb")
_store.write_bars(_bars("SPY", 50))
_store.write_alerts(_alerts())
_keys = KeyStore(_root / "api_keys.json")
_, KEY = _keys.create("fuzz")
app = create_app(StoreBackend(_store), _keys)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


# derandomized: the same examples on every run, so a red run is reproducible (raise max_examples to search more)
@schema.parametrize()
@settings(max_examples=50, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_api_holds_its_openapi_contract(case: schemathesis.Case) -> None:
    # whether a cursor or an alert id is one the API issued cannot be said in the schema: a made-up one is refused
    # (422 naming the cursor, 404 for an id; tested in test_api.py), so those cases skip the acceptance check
    made_up = "cursor" in (case.query or {}) or "alert_id" in (case.path_parameters or {})
    excluded = [positive_data_acceptance] if made_up else []
    case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"}, excluded_checks=excluded)
