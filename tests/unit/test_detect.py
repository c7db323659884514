"""``sentinel detect``: the ensemble over files as a stream, the alerts CSV, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cluster.cli import app
from cluster.detect import CSV_COLUMNS, run_detect
from ingest.synthetic import SimulationConfig, simulate, write_simulation
from models.ensemble import Ensemble, members_by_name
from models.walkforward import WalkForward

MEMBERS = ["price_jump", "garch", "volume_burst", "trade_burst", "spread_blowout", "stale_feed", "cusum"]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("sim")
    result = simulate(SimulationConfig(seed=2, days=3, activity=0.3, assets=("SPY", "BTC-USD")))
    return write_simulation(result, out)


def test_detect_writes_the_alerts_csv_and_trades_with_quotes_give_the_alerts_of_their_bars(
    sim: dict[str, Path], tmp_path: Path
) -> None:
    runner = CliRunner()
    args = ["--warmup", "1000", "--models", ",".join(MEMBERS)]
    res = runner.invoke(
        app, ["detect", str(sim["trades"]), str(sim["quotes"]), "--output", str(tmp_path / "a.csv"), *args]
    )
    assert res.exit_code == 0, res.output
    assert "sentinel detect" in res.output
    from_ticks = pd.read_csv(tmp_path / "a.csv")
    assert tuple(from_ticks.columns) == CSV_COLUMNS
    assert len(from_ticks) > 0
    assert from_ticks["severity"].between(0, 1).all()
    assert set(from_ticks["kind"]) <= {
        "flash_crash",
        "volatility_spike",
        "volume_anomaly",
        "spread_blowout",
        "regime_change",
        "data_gap",
    }
    assert not from_ticks["explanation"].str.contains("\n").any()
    res = runner.invoke(app, ["detect", str(sim["bars"]), "--output", str(tmp_path / "b.csv"), *args])
    assert res.exit_code == 0, res.output
    pd.testing.assert_frame_equal(from_ticks, pd.read_csv(tmp_path / "b.csv"))


def test_batch_size_does_not_change_the_alerts(sim: dict[str, Path]) -> None:
    walk = WalkForward(Ensemble(members_by_name(MEMBERS)), warmup=1000)
    one = run_detect([sim["bars"]], walk, batch_rows=1_000_000).alerts
    many = run_detect([sim["bars"]], walk, batch_rows=777).alerts
    assert len(one) > 0
    pd.testing.assert_frame_equal(one, many)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--models", "garch,nope"], "models='nope'"),
        (["--interval", "soon"], "interval='soon'"),
        (["--alert-rate", "2"], "alert_rate=2.0"),
    ],
)
def test_bad_options_get_a_clear_error(sim: dict[str, Path], tmp_path: Path, args: list[str], message: str) -> None:
    res = CliRunner().invoke(app, ["detect", str(sim["bars"]), "--output", str(tmp_path / "x.csv"), *args])
    assert res.exit_code == 2
    assert message in res.output


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["detect", str(tmp_path / "none.csv"), "--output", str(tmp_path / "x.csv")])
    assert res.exit_code == 2
    assert "none.csv" in res.output


def test_evaluate_compares_every_model_with_the_ensemble_on_synthetic_and_real_history(tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    res = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--seeds",
            "5",
            "--days",
            "4",
            "--assets",
            "SPY,BTC-USD",
            "--index",
            "sp500",
            "--output",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    tables = json.loads(out.read_text())
    assert set(tables) == {"synthetic seeds 5", "sp500 daily"}
    for rows in tables.values():
        models = [r["model"] for r in rows]
        assert models[0] == "ensemble"
        assert {"garch", "hmm_regime", "bocpd", "isolation_forest", "stale_feed"} <= set(models)
        assert all({"recall", "precision", "f1", "false_per_1000_calm", "median_delay_bars"} <= set(r) for r in rows)
    assert tables["sp500 daily"][0]["events"] == 12
    assert "sentinel evaluate" in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "1,x"], "seeds='1,x'"),
        (["--index", "dax"], "index='dax'"),
        (["--assets", "SPY,NOPE"], "assets='NOPE'"),
        (["--models", "garch,nope"], "models='nope'"),
    ],
)
def test_evaluate_refuses_bad_options_by_name(args: list[str], message: str) -> None:
    res = CliRunner().invoke(app, ["evaluate", *args])
    assert res.exit_code == 2
    assert message in res.output
