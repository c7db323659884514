"""The ``sentinel`` command line.

Every command builds one :class:`~cluster.config.Settings` (file, environment, then its own options), shows
progress while it works and ends with a one-screen summary. Errors in input name the field and the value and
exit with status 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cluster.config import Settings

if TYPE_CHECKING:
    from serve_apps.keys import KeyStore

app = typer.Typer(
    name="sentinel",
    help="Market Sentinel: real-time market anomaly and signal detection on Ray.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data directory (default ./.sentinel).")]


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            console.print(f"[red]error:[/] setting {loc}={err.get('input')!r}: {err['msg']}")
        raise typer.Exit(2) from exc


def _parse_speed(text: str | None) -> float | None:
    if text is None:
        return None
    if text.strip().lower() in ("max", "0"):
        return 0.0
    try:
        value = float(text.rstrip("xX"))
    except ValueError:
        console.print(f"[red]error:[/] --speed={text!r}: use a number (market seconds per second, e.g. 60) or 'max'")
        raise typer.Exit(2) from None
    if value <= 0:
        console.print(f"[red]error:[/] --speed={text!r}: must be > 0, or 'max'")
        raise typer.Exit(2)
    return value


def _counts_table(title: str, counts: dict[str, Any]) -> Table:
    t = Table(title=title)
    t.add_column("what")
    t.add_column("rows", justify="right")
    for k, v in counts.items():
        t.add_row(k, f"{v:,}" if isinstance(v, int) else str(v))
    return t


@app.command()
def up(
    source: Annotated[
        str | None,
        typer.Option(
            help="arch | synthetic | binance | coinbase | yahoo | alphavantage | polygon | a file or directory."
        ),
    ] = None,
    speed: Annotated[str | None, typer.Option(help="Market seconds per wall second (e.g. 60), or 'max'.")] = None,
    data_dir: DataDir = None,
    store: Annotated[
        str | None, typer.Option(help="duckdb (embedded, default) | postgres (SENTINEL_DATABASE_URL).")
    ] = None,
    buffer: Annotated[str | None, typer.Option(help="memory (default) | redis (SENTINEL_REDIS_URL).")] = None,
    exit_when_done: Annotated[bool, typer.Option(help="Stop when the source is exhausted.")] = False,
) -> None:
    """Start local Ray and stream the source through validation and bar building into the store."""
    from cluster.up import run_up

    settings = _settings(source=source, data_dir=data_dir, store=store, buffer=buffer)
    pace = _parse_speed(speed) if speed is not None else settings.replay_speed
    try:
        report = run_up(settings, speed=pace, console=console, exit_when_done=exit_when_done)
    except (ValueError, ConnectionError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    status = report.status
    assets = status.get("assets", {}).values()
    bars: dict[str, int] = {}
    for asset in assets:
        for label, n in asset["bars"].items():
            bars[label] = bars.get(label, 0) + int(n)
    summary = {
        "source": report.source,
        "finished": "yes" if report.finished else "stopped",
        "seconds": f"{report.seconds:.1f}",
        "rows received": int(status.get("received", 0)),
        **{f"accepted {k}": int(v) for k, v in status.get("accepted", {}).items()},
        **{f"quarantined {k}": int(v) for k, v in status.get("quarantined", {}).items()},
        **{f"bars built {k}": n for k, n in bars.items()},
        "alerts": sum(int(a["alerts"]) for a in assets),
        "actor restarts": int(status.get("recoveries", 0)),
        **{f"store {k}": v for k, v in report.counts.items()},
    }
    console.print()
    console.print(_counts_table("sentinel up: summary", summary))


@app.command()
def simulate(
    out: Annotated[Path, typer.Option(help="Output directory.")],
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes the same bytes.")] = 0,
    days: Annotated[int, typer.Option(min=1, help="Trading days to simulate.")] = 1,
    assets: Annotated[str | None, typer.Option(help="Comma-separated symbols (default: the whole universe).")] = None,
    start: Annotated[str, typer.Option(help="First day, UTC date.")] = "2024-01-02",
    anomalies: Annotated[bool, typer.Option(help="Inject labelled anomalies.")] = True,
) -> None:
    """Write a synthetic market (trades, quotes, 1-min bars) with a labels file of injected anomalies."""
    from ingest.synthetic import UNIVERSE, SimulationConfig, write_simulation
    from ingest.synthetic import simulate as run_sim

    chosen = tuple(a.strip() for a in assets.split(",") if a.strip()) if assets else tuple(UNIVERSE)
    try:
        config = SimulationConfig(seed=seed, days=days, start=start, assets=chosen, anomalies=anomalies)
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    t0 = time.perf_counter()
    with console.status(f"simulating {len(chosen)} assets x {days} day(s)"):
        result = run_sim(config)
        files = write_simulation(result, out)
    kinds: dict[str, int] = {}
    for label in result.labels:
        kinds[label.kind] = kinds.get(label.kind, 0) + 1
    summary: dict[str, Any] = {
        "trades": len(result.trades),
        "quotes": len(result.quotes),
        "bars (1 min)": len(result.bars),
        **{f"label {k}": v for k, v in sorted(kinds.items())},
        "seconds": f"{time.perf_counter() - t0:.1f}",
        **{f"file {k}": str(v) for k, v in files.items()},
    }
    console.print(_counts_table(f"sentinel simulate --seed {seed}", summary))


@app.command()
def ingest(
    files: Annotated[list[Path], typer.Argument(help="CSV/Parquet files or directories in the input contract.")],
    symbol: Annotated[str | None, typer.Option(help="Symbol of files without a symbol column.")] = None,
    intervals: Annotated[str | None, typer.Option(help="Bar intervals to build, e.g. '1s,1min'.")] = None,
    data_dir: DataDir = None,
    store: Annotated[str | None, typer.Option(help="duckdb (default) | postgres (SENTINEL_DATABASE_URL).")] = None,
) -> None:
    """Validate files, build bars from their trades and quotes, and write everything to the store."""
    from cluster.stores import open_store
    from ingest.files import FileFormatError
    from ingest.pipeline import IngestPipeline
    from ingest.sources.replay import FileReplay

    settings = _settings(data_dir=data_dir, bar_intervals=intervals, store=store)
    try:
        replay = FileReplay(files, speed=None, batch_rows=settings.batch_rows, symbol=symbol)
    except (FileFormatError, FileNotFoundError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    t0 = time.perf_counter()
    try:
        opened = open_store(settings)
    except (ConnectionError, OSError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    try:
        pipeline = IngestPipeline(opened, settings.validation(), settings.bar_intervals_ns, source=replay.name)

        async def feed(progress: Progress, task: Any) -> None:
            async for batch in replay.batches():
                pipeline.process(batch)
                progress.update(task, advance=len(batch))

        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
        ) as progress:
            task = progress.add_task(f"ingest {replay.name}", total=replay.rows_total)
            asyncio.run(feed(progress, task))
        stats = pipeline.flush()
        counts = opened.counts()
    finally:
        opened.close()
    seconds = time.perf_counter() - t0
    summary: dict[str, Any] = {
        "rows read": stats.received,
        **{f"accepted {k}": v for k, v in stats.accepted.items()},
        "suspicious trades": stats.suspicious,
        **{f"quarantined {k}": v for k, v in sorted(stats.quarantined.items())},
        **{f"bars built {k}": v for k, v in stats.bars_built.items()},
        **{f"newly stored {k}": v for k, v in stats.stored.items()},
        **{f"store {k}": v for k, v in counts.items()},
        "rows/s": f"{stats.received / max(seconds, 1e-9):,.0f}",
    }
    where = settings.store_path if settings.store == "duckdb" else "PostgreSQL"
    console.print(_counts_table(f"sentinel ingest -> {where}", summary))


@app.command()
def detect(
    files: Annotated[list[Path], typer.Argument(help="CSV/Parquet files or directories in the input contract.")],
    output: Annotated[Path, typer.Option(help="Where the alerts CSV goes.")] = Path("alerts.csv"),
    symbol: Annotated[str | None, typer.Option(help="Symbol of files without a symbol column.")] = None,
    interval: Annotated[str, typer.Option(help="Bar length built from trades and quotes, e.g. 1min.")] = "1min",
    warmup: Annotated[int, typer.Option(min=10, help="Bars of each symbol the first fit learns from.")] = 1500,
    refit_every: Annotated[int, typer.Option(min=0, help="Bars scored between refits (0: fit once).")] = 0,
    window: Annotated[int, typer.Option(min=10, help="Latest bars a refit learns from at most.")] = 5000,
    models: Annotated[
        str | None, typer.Option(help="Comma-separated ensemble members (default: all but lstm_autoencoder).")
    ] = None,
    alert_rate: Annotated[float, typer.Option(help="Share of validation bars each kind alerts on.")] = 0.003,
) -> None:
    """Run the anomaly ensemble over files as a stream and write its alerts (timestamp, symbol, kind, ...)."""
    from cluster.detect import alerts_csv, run_detect
    from ingest.files import FileFormatError
    from ingest.pipeline import parse_interval
    from models.ensemble import DEFAULT_MEMBERS, Ensemble, members_by_name
    from models.walkforward import WalkForward

    try:
        interval_ns = parse_interval(interval)
        members = members_by_name([m.strip() for m in models.split(",") if m.strip()]) if models else DEFAULT_MEMBERS
        walk = WalkForward(
            Ensemble(members, alert_rate=alert_rate), warmup=warmup, refit_every=refit_every or None, window=window
        )
        walk.init_state()
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    t0 = time.perf_counter()
    try:
        with console.status(f"detecting in {', '.join(str(f) for f in files)}"):
            run = run_detect(files, walk, interval_ns, symbol=symbol)
    except (FileFormatError, FileNotFoundError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    output.parent.mkdir(parents=True, exist_ok=True)
    alerts_csv(run.alerts).to_csv(output, index=False)
    kinds = run.alerts["kind"].value_counts().to_dict() if len(run.alerts) else {}
    summary: dict[str, Any] = {
        "rows read": run.stats.received,
        **{f"quarantined {k}": v for k, v in sorted(run.stats.quarantined.items())},
        "symbols": len(run.bars),
        "bars": sum(run.bars.values()),
        "bars scored (after warm-up)": sum(run.scored.values()),
        "ensemble fits": sum(run.fits.values()),
        "alerts": len(run.alerts),
        **{f"alerts {k}": int(v) for k, v in sorted(kinds.items())},
        "seconds": f"{time.perf_counter() - t0:.1f}",
        "output": str(output),
    }
    console.print(_counts_table("sentinel detect", summary))


@app.command()
def evaluate(
    seeds: Annotated[str, typer.Option(help="Comma-separated simulation seeds.")] = "1,2,3",
    days: Annotated[int, typer.Option(min=4, help="Days of each simulated market.")] = 8,
    index: Annotated[str, typer.Option(help="Real daily history: sp500, nasdaq, both or none.")] = "both",
    assets: Annotated[str | None, typer.Option(help="Comma-separated simulated symbols (default: all).")] = None,
    models: Annotated[
        str | None, typer.Option(help="Comma-separated ensemble members (default: all but lstm_autoencoder).")
    ] = None,
    output: Annotated[Path | None, typer.Option(help="Also write the per-model table as JSON here.")] = None,
) -> None:
    """Compare every detector and the ensemble: event recall, precision, F1, false alerts, delay."""
    import json
    import warnings

    from ingest.synthetic import SimulationConfig
    from models.ensemble import DEFAULT_MEMBERS, Ensemble, members_by_name
    from models.evaluation import DAILY_ALERT_RATE, evaluate_index, evaluate_synthetic
    from models.walkforward import WalkForward

    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError as exc:
        console.print(f"[red]error:[/] seeds={seeds!r}: comma-separated integers expected")
        raise typer.Exit(2) from exc
    chosen = tuple(a.strip() for a in assets.split(",") if a.strip()) if assets else None
    try:
        members = members_by_name([m.strip() for m in models.split(",") if m.strip()]) if models else DEFAULT_MEMBERS
        if chosen:
            SimulationConfig(assets=chosen)
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    indices = {"both": ["sp500", "nasdaq"], "none": [], "sp500": ["sp500"], "nasdaq": ["nasdaq"]}.get(index)
    if indices is None:
        console.print(f"[red]error:[/] index={index!r}: one of sp500, nasdaq, both, none")
        raise typer.Exit(2)
    tables: dict[str, list[dict[str, object]]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if seed_list:
            with console.status(f"synthetic markets, seeds {seed_list}"):
                walk = WalkForward(Ensemble(members), warmup=1500, window=6000, min_span_ns=2 * 86_400 * 10**9)
                run = evaluate_synthetic(seed_list, days=days, assets=chosen, walk=walk)
            tables[f"synthetic seeds {seeds}"] = [r.as_dict() for r in run.reports]
        for name in indices:
            with console.status(f"{name} daily 1999-2018"):
                walk = WalkForward(
                    Ensemble(members, alert_rate=DAILY_ALERT_RATE), warmup=500, refit_every=250, window=2500
                )
                reports, _ = evaluate_index(name, walk)
            tables[f"{name} daily"] = [r.as_dict() for r in reports]
    for title, rows in tables.items():
        table = Table(title=f"sentinel evaluate: {title}")
        columns = ("model", "events", "found", "recall", "precision", "f1", "false_per_1000_calm", "median_delay_bars")
        for col in columns:
            table.add_column(col.replace("_", " "), justify="left" if col == "model" else "right")
        for row in rows:
            table.add_row(*(str(row[c]) for c in columns))
        console.print(table)
    if output is not None:
        output.write_text(json.dumps(tables, indent=1))


def _live_status(settings: Settings) -> bool:
    """Print the per-asset progress ``sentinel up`` last wrote; False when there is none."""
    import json
    import os

    import pandas as pd

    from cluster.up import status_path

    path = status_path(settings)
    try:
        doc = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    age = time.time() - int(doc.get("updated_ns", 0)) / 1e9
    try:
        os.kill(int(doc.get("pid", 0)), 0)
        running = age < 30
    except (OSError, ValueError):
        running = False
    state = "running" if running else ("finished" if doc.get("finished") else "stopped")
    title = f"sentinel up ({doc.get('source', '?')}): {state}, updated {age:,.0f} s ago"
    t = Table(title=title)
    for col in ("symbol", "records in", "bars", "alerts", "last record (UTC)", "lag ms", "restarts"):
        t.add_column(col, justify="left" if col == "symbol" else "right")
    for sym, a in sorted(doc.get("assets", {}).items()):
        last = "-" if a.get("last_ts") is None else pd.Timestamp(int(a["last_ts"]), tz="UTC").isoformat()
        bars = ", ".join(f"{k} {v:,}" for k, v in a.get("bars", {}).items()) or "0"
        t.add_row(sym, f"{a['records']:,}", bars, f"{a['alerts']:,}", last, f"{a['lag_ms']:,.1f}", str(a["restarts"]))
    console.print(t)
    totals = {
        "rows received": doc.get("received", 0),
        **{f"quarantined {k}": v for k, v in doc.get("quarantined", {}).items()},
        "buffer entries not yet stored": doc.get("entries_appended", 0) - doc.get("entries_acked", 0),
        "actor restarts": doc.get("recoveries", 0),
    }
    console.print(_counts_table("stream", totals))
    return True


@app.command()
def status(
    data_dir: DataDir = None,
    store: Annotated[str | None, typer.Option(help="duckdb (default) | postgres (SENTINEL_DATABASE_URL).")] = None,
) -> None:
    """Show the live per-asset progress of `sentinel up` and what the store holds."""
    import duckdb

    from cluster.stores import open_store
    from ingest.store.base import Store
    from ingest.store.duckdb_store import DuckDBStore

    settings = _settings(data_dir=data_dir, store=store)
    live = _live_status(settings)
    where = str(settings.store_path) if settings.store == "duckdb" else "PostgreSQL"
    opened: Store
    if settings.store == "duckdb":
        path = settings.store_path
        if not path.exists():
            console.print(f"no store yet at {path}: run `sentinel up` or `sentinel ingest FILE`")
            raise typer.Exit(0 if live else 1)
        try:
            opened = DuckDBStore(path, read_only=True)
        except duckdb.IOException as exc:
            if live:
                console.print(f"the store {path} is open by the running `sentinel up`: its counts show when it stops")
                return
            console.print(f"[red]error:[/] {path} is open by a running `sentinel up` ({exc})")
            raise typer.Exit(1) from exc
    else:
        try:
            opened = open_store(settings)
        except (ConnectionError, OSError) as exc:
            console.print(f"[red]error:[/] {exc}")
            raise typer.Exit(1) from exc
    try:
        counts = opened.counts()
        symbols = opened.symbols()
        reasons = opened.read_quarantine().to_frame()["reason"].value_counts().to_dict()
    finally:
        opened.close()
    console.print(_counts_table(f"store {where}", {**counts, "symbols": ", ".join(symbols) or "-"}))
    if reasons:
        console.print(_counts_table("quarantine by reason", {str(k): int(v) for k, v in reasons.items()}))


keys_app = typer.Typer(
    name="keys", help="API keys of the HTTP API: create, list and revoke them.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")


def _key_store(data_dir: Path | None) -> KeyStore:
    from serve_apps.keys import KeyStore

    return KeyStore.default(_settings(data_dir=data_dir).data_dir)


@contextlib.contextmanager
def _key_errors() -> Iterator[None]:
    """Key-store errors as the command's exit: unknown id or bad input 2, the file system 1."""
    try:
        yield
    except KeyError as exc:
        console.print(f"[red]error:[/] {exc.args[0]}")
        raise typer.Exit(2) from exc
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    except OSError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="Who or what the key is for (1-64 printable characters).")],
    data_dir: DataDir = None,
) -> None:
    """Create an API key and print it: it is shown this once and never stored."""
    store = _key_store(data_dir)
    with _key_errors():
        record, key = store.create(name)
    console.print(key, markup=False, highlight=False, soft_wrap=True)
    console.print("This key will not be shown again: store it now (only its salted hash is kept).")
    console.print(f"id {record.id}, name {record.name!r}, in {store.path}", markup=False, highlight=False)


def _utc_text(iso: str) -> str:
    return iso.removesuffix("+00:00").replace("T", " ")


@keys_app.command("list")
def keys_list(data_dir: DataDir = None) -> None:
    """List the API keys, revoked ones included, oldest first."""
    store = _key_store(data_dir)
    with _key_errors():
        records = store.list()
    if not records:
        console.print(f"no API keys in {store.path}: create one with `sentinel keys create --name NAME`")
        return
    t = Table(title=f"API keys in {store.path}")
    for col in ("id", "name", "prefix", "created (UTC)", "revoked (UTC)"):
        t.add_column(col, no_wrap=col != "name")
    for r in records:
        # the stored times are ISO-8601 in UTC; shown without the offset so the table fits 80 columns
        t.add_row(r.id, r.name, r.prefix, _utc_text(r.created), _utc_text(r.revoked) if r.revoked else "-")
    console.print(t)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(metavar="ID", help="The key's id, as `sentinel keys list` shows.")],
    data_dir: DataDir = None,
) -> None:
    """Revoke an API key: the running API refuses it from its next request."""
    store = _key_store(data_dir)
    with _key_errors():
        record = store.revoke(key_id)
    console.print(f"revoked API key {record.id} ({record.name}) at {record.revoked}", markup=False)


def main() -> None:
    """Entry point of the console script."""
    app()
