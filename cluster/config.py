"""Settings: one frozen object, built once in the driver and passed explicitly to whatever needs it.

Sources, later ones winning: defaults, an optional ``sentinel.toml`` (in the working directory, or the file
named by ``SENTINEL_CONFIG``), environment variables prefixed ``SENTINEL_`` (``SENTINEL_DATA_DIR=/data``), then
arguments given in code or on the command line. Unknown keys are errors, whatever their source. Nothing is read
at import time.

Secrets (connection strings with passwords, API keys) are declared as ``SecretStr`` so that they never
appear in a repr, a log line or ``sentinel status``; :meth:`Settings.public` is the view to print.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from ingest.pipeline import parse_interval
from ingest.records import NS_PER_SECOND
from ingest.sources.replay import ARCH_SERIES
from ingest.validation import SYMBOL_PATTERN, ValidationConfig

if TYPE_CHECKING:
    from models.walkforward import WalkForward

#: The seed universe: equities, crypto, FX, commodity and bond ETFs.
SEED_UNIVERSE: tuple[str, ...] = (
    "AAPL", "GOOGL", "MSFT", "AMZN", "TSLA", "SPY", "QQQ",
    "BTC-USD", "ETH-USD", "ADA-USD",
    "EURUSD", "GBPUSD", "USDJPY",
    "GLD", "SLV", "USO",
    "TLT", "IEF", "HYG",
)  # fmt: skip
#: The seed universe, the real daily series of ``arch`` and Binance's USDT pairs.
DEFAULT_UNIVERSE: tuple[str, ...] = (
    *SEED_UNIVERSE,
    *ARCH_SERIES,
    # Binance spot trades the coins against USDT: other instruments than the USD pairs
    "BTC-USDT",
    "ETH-USDT",
    "ADA-USDT",
)


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return value


class Settings(BaseSettings):
    """Everything configurable, with its unit.

    Attributes
    ----------
    data_dir : Path
        Where the embedded store and model files live (``./.sentinel`` by default).
    universe : tuple of str
        Known symbols; rows of other symbols are quarantined as ``unknown_symbol``. Comma-separated in the
        environment.
    source : str
        What ``sentinel up`` streams: ``arch`` (real daily history shipped with ``arch``), ``synthetic`` (the
        simulated market), a live feed (``binance``, ``coinbase``, ``yahoo``, ``alphavantage``, ``polygon``) or a
        path to a CSV/Parquet file or a directory of them.
    live_symbols : tuple of str or None
        Symbols a live feed streams (comma-separated in the environment); ``None`` for the feed's default.
    replay_speed : float or None
        Market time per wall time (60 = a minute per second); ``None`` for the source's default (arch: a day per
        second; synthetic: a minute per second; files: as fast as possible). ``0`` means as fast as possible.
    bar_intervals : tuple of str
        Bar lengths built from trades and quotes, e.g. ``("1s", "1min")``.
    out_of_order_tolerance_ms, future_tolerance_ms : int
        How late (behind the symbol's latest row) and how early (ahead of the clock) a row may be, in ms.
    suspicious_threshold : float
        Relative distance from the recent median price beyond which a trade is flagged suspicious.
    suspicious_window : int
        Number of recent trades whose median is that reference.
    batch_rows : int
        Most rows of each kind per micro-batch.
    seed, sim_days : int
        Seed and length in days of the synthetic market streamed by ``--source synthetic``.
    ray_address : str or None
        Address of a Ray cluster to join; ``None`` starts a local Ray.
    store : {"duckdb", "postgres"}
        The history store: the embedded DuckDB file, or PostgreSQL at :attr:`database_url`.
    database_url : SecretStr or None
        PostgreSQL connection URL (``postgresql://user:password@host:5432/db``); a secret, never printed.
    buffer : {"memory", "redis"}
        The queue between ingestion and processing: in-process, or Redis Streams at :attr:`redis_url`.
    redis_url : SecretStr or None
        Redis URL (``redis://:password@host:6379/0``); a secret, never printed.
    polygon_api_key, alpha_vantage_api_key : SecretStr or None
        API keys of the live feeds that need one; secrets, never printed.
    detection : bool
        Whether the per-asset actors run the anomaly ensemble on their bars.
    detect_interval : str
        Length of the bars built from trades and quotes that the ensemble scores (input bars are scored at their
        own length).
    detect_warmup, detect_refit_every, detect_window : int
        The ensemble's walk-forward schedule, in bars of each symbol: fit after ``detect_warmup``, refit every
        ``detect_refit_every`` (0: never) on the latest ``detect_window``.
    api : bool
        Whether ``sentinel up`` serves the API (Ray Serve) at ``api_host:api_port``.
    api_host : str
        Interface of the API's HTTP proxy (127.0.0.1: this machine only).
    api_port : int
        Port of the API.
    """

    model_config = SettingsConfigDict(
        env_prefix="SENTINEL_",
        frozen=True,
        extra="forbid",
        validate_default=True,
    )

    data_dir: Path = Path(".sentinel")
    universe: Annotated[tuple[str, ...], NoDecode] = DEFAULT_UNIVERSE
    source: str = "arch"
    replay_speed: float | None = None
    live_symbols: Annotated[tuple[str, ...] | None, NoDecode] = None
    bar_intervals: Annotated[tuple[str, ...], NoDecode] = ("1s", "1min")
    out_of_order_tolerance_ms: int = Field(default=1000, ge=0)
    future_tolerance_ms: int = Field(default=1000, ge=0)
    suspicious_threshold: float = Field(default=0.05, gt=0)
    suspicious_window: int = Field(default=50, ge=1)
    batch_rows: int = Field(default=10_000, ge=1)
    seed: int = 0
    sim_days: int = Field(default=1, ge=1)
    ray_address: str | None = None
    store: Literal["duckdb", "postgres"] = "duckdb"
    database_url: SecretStr | None = None
    buffer: Literal["memory", "redis"] = "memory"
    redis_url: SecretStr | None = None
    polygon_api_key: SecretStr | None = None
    alpha_vantage_api_key: SecretStr | None = None
    detection: bool = True
    detect_interval: str = "1min"
    detect_warmup: int = Field(default=1500, ge=10)
    detect_refit_every: int = Field(default=0, ge=0)
    detect_window: int = Field(default=5000, ge=10)
    api: bool = True
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)

    @field_validator("universe", "bar_intervals", "live_symbols", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("universe")
    @classmethod
    def _symbols_well_formed(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for sym in value:
            if not SYMBOL_PATTERN.match(sym):
                raise ValueError(f"universe: symbol {sym!r} is not well formed")
        return value

    @field_validator("bar_intervals")
    @classmethod
    def _intervals_parse(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for text in value:
            parse_interval(text)
        return value

    @field_validator("detect_interval")
    @classmethod
    def _detect_interval_parses(cls, value: str) -> str:
        parse_interval(value)
        return value

    @model_validator(mode="after")
    def _servers_have_urls(self) -> Settings:
        if self.store == "postgres" and self.database_url is None:
            raise ValueError("store='postgres' needs database_url (SENTINEL_DATABASE_URL)")
        if self.buffer == "redis" and self.redis_url is None:
            raise ValueError("buffer='redis' needs redis_url (SENTINEL_REDIS_URL)")
        return self

    @field_validator("replay_speed")
    @classmethod
    def _speed_non_negative(cls, value: float | None) -> float | None:
        if value is not None and value < 0:
            raise ValueError(f"replay_speed={value!r}: must be >= 0 (0 = as fast as possible)")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = Path(os.environ.get("SENTINEL_CONFIG", "sentinel.toml"))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)

    # ----------------------------------------------------------------------------------------------------
    @property
    def store_path(self) -> Path:
        """The DuckDB file of the embedded store."""
        return self.data_dir / "sentinel.duckdb"

    @property
    def detect_interval_ns(self) -> int:
        """:attr:`detect_interval` in nanoseconds."""
        return parse_interval(self.detect_interval)

    def walk_forward(self) -> WalkForward | None:
        """The anomaly ensemble on its walk-forward schedule, or ``None`` when :attr:`detection` is off."""
        if not self.detection:
            return None
        from models.ensemble import Ensemble
        from models.walkforward import WalkForward

        return WalkForward(
            Ensemble(),
            warmup=self.detect_warmup,
            refit_every=self.detect_refit_every or None,
            window=max(self.detect_window, self.detect_warmup),
        )

    @property
    def bar_intervals_ns(self) -> tuple[int, ...]:
        """:attr:`bar_intervals` in nanoseconds."""
        return tuple(parse_interval(t) for t in self.bar_intervals)

    def validation(self) -> ValidationConfig:
        """The validation rules these settings describe."""
        return ValidationConfig(
            universe=frozenset(self.universe),
            out_of_order_tolerance_ns=self.out_of_order_tolerance_ms * NS_PER_SECOND // 1000,
            future_tolerance_ns=self.future_tolerance_ms * NS_PER_SECOND // 1000,
            suspicious_window=self.suspicious_window,
            suspicious_threshold=self.suspicious_threshold,
        )

    def public(self) -> dict[str, Any]:
        """Every setting, secrets masked: what may be printed or logged."""
        return self.model_dump(mode="json")
