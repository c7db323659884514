"""The anomaly ensemble on a walk-forward schedule, as one streaming step with carried state.

:class:`WalkForward` keeps a symbol's recent rows, fits an :class:`~models.ensemble.Ensemble` after a warm-up
and refits it on schedule, all inside the stream state: a file scored in one call (``sentinel detect``) and the
same rows fed bar by bar to an actor give the same alerts, and a model only ever scores rows after its
training rows.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd

from ingest.records import F64, I64
from models.base import Observations, check_positive_int
from models.ensemble import Ensemble, EnsembleState, empty_alerts


@dataclass
class WalkState:
    """Where a walk-forward stream stands: recent rows kept for refits, counts, the current model and its state."""

    parts: list[Observations] = field(default_factory=list)
    kept: int = 0
    seen: int = 0
    first_ts: int | None = None
    since_fit: int = 0
    model: Ensemble | None = None
    model_state: EnsembleState | None = None
    fits: int = 0


@dataclass(frozen=True)
class WalkScores:
    """A walk-forward stream's output for a batch: evidence per kind, single-model flags, alerts.

    Rows before the first fit have NaN evidence, no flags and no alerts.
    """

    ts: I64
    evidence: dict[str, F64]
    member_flags: dict[str, npt.NDArray[np.bool_]]
    alerts: pd.DataFrame

    def __len__(self) -> int:
        return len(self.ts)


class WalkForward:
    """An :class:`Ensemble` on a walk-forward schedule, as one streaming step with carried state.

    The first ``warmup`` rows are kept and not scored; then an ensemble is fitted on the last ``window`` rows
    seen and scores the rows after them; every ``refit_every`` scored rows (never, when ``None``) a new
    ensemble is fitted on the last ``window`` rows and takes over. Every decision depends on row counts only,
    so any split of a stream into batches gives the same output, and a model only ever scores rows after its
    training rows.

    Parameters
    ----------
    ensemble : Ensemble
        The specification each fit copies (its parameters; it is never fitted itself).
    warmup : int
        Rows before the first fit, >= 10.
    refit_every : int, optional
        Rows scored between fits, >= 1; ``None`` fits once.
    window : int
        Rows the fits learn from at most (the latest), >= ``warmup``.
    min_span_ns : int
        Time the warm-up rows must span at least, ns (0: none): a fit should see a whole day of an instrument's
        rhythm (its session, its quiet hours), however many bars that takes.
    """

    def __init__(
        self,
        ensemble: Ensemble | None = None,
        warmup: int = 2000,
        refit_every: int | None = None,
        window: int = 5000,
        min_span_ns: int = 0,
    ) -> None:
        self.ensemble = Ensemble() if ensemble is None else ensemble
        self.warmup = warmup
        self.refit_every = refit_every
        self.window = window
        self.min_span_ns = min_span_ns

    def _check_params(self) -> tuple[int, int | None, int]:
        self.ensemble._check_params()
        warmup = check_positive_int("warmup", self.warmup, minimum=10)
        refit = None if self.refit_every is None else check_positive_int("refit_every", self.refit_every)
        window = check_positive_int("window", self.window, minimum=warmup)
        span = self.min_span_ns
        if isinstance(span, bool) or not isinstance(span, int | np.integer) or span < 0:
            raise ValueError(f"min_span_ns={span!r}: must be an integer >= 0")
        return warmup, refit, window

    def init_state(self) -> WalkState:
        """The state before any row."""
        self._check_params()
        return WalkState()

    def update(self, state: WalkState, batch: Observations) -> WalkScores:
        """Score the new rows ``batch`` (fitting and refitting on schedule); advances ``state`` in place.

        Raises
        ------
        ValueError
            When a fit fails (naming why) or a parameter is invalid.
        """
        warmup, refit, window = self._check_params()
        kinds = self.ensemble.kinds
        n, pos = len(batch), 0
        parts: list[WalkScores] = []
        while pos < n:
            if state.model is None:
                take = max(1, min(warmup - state.seen, n - pos))
            elif refit is None:
                take = n - pos
            else:
                take = min(refit - state.since_fit, n - pos)
            part = batch.take(slice(pos, pos + take))
            if state.first_ts is None:
                state.first_ts = int(part.ts[0])
            if state.model is None or state.model_state is None:
                parts.append(_unscored(part, kinds, ()))
            else:
                out = state.model.update(state.model_state, part)
                parts.append(WalkScores(part.ts, out.evidence, out.member_flags, out.alerts))
                state.since_fit += take
            self._keep(state, part, window)
            state.seen += take
            pos += take
            if state.model is None:
                due = state.seen >= warmup and int(part.ts[-1]) - int(state.first_ts) >= int(self.min_span_ns)
            else:
                due = refit is not None and state.since_fit >= refit
            if due:
                history = Observations.concat(state.parts)
                model = copy.deepcopy(self.ensemble).fit(history.take(slice(max(0, len(history) - window), None)))
                state.model, state.model_state = model, model.init_state()
                state.since_fit, state.fits = 0, state.fits + 1
        return _concat_walk(parts, batch, kinds)

    def score(self, batch: Observations) -> WalkScores:
        """Score ``batch`` from an empty state: the batch form of :meth:`update`."""
        return self.update(self.init_state(), batch)

    @staticmethod
    def _keep(state: WalkState, part: Observations, window: int) -> None:
        if len(part):
            state.parts.append(part)
            state.kept += len(part)
        while state.parts and state.kept - len(state.parts[0]) >= window:
            state.kept -= len(state.parts.pop(0))
        if len(state.parts) > 64:  # many small parts (bar by bar): keep the latest window as one
            merged = Observations.concat(state.parts)
            merged = merged.take(slice(max(0, len(merged) - window), None))
            state.parts, state.kept = [merged], len(merged)

    def __repr__(self) -> str:
        return (
            f"WalkForward({self.ensemble!r}, warmup={self.warmup!r}, refit_every={self.refit_every!r}, "
            f"window={self.window!r}, min_span_ns={self.min_span_ns!r})"
        )


def _unscored(part: Observations, kinds: tuple[str, ...], names: Sequence[str]) -> WalkScores:
    n = len(part)
    return WalkScores(
        part.ts,
        {k: np.full(n, np.nan) for k in kinds},
        {name: np.zeros(n, dtype=np.bool_) for name in names},
        empty_alerts(),
    )


def _concat_walk(parts: list[WalkScores], batch: Observations, kinds: tuple[str, ...]) -> WalkScores:
    if not parts:
        return _unscored(batch, kinds, ())
    names = sorted({name for p in parts for name in p.member_flags})
    flags = {
        name: np.concatenate([p.member_flags.get(name, np.zeros(len(p), dtype=np.bool_)) for p in parts])
        for name in names
    }
    evidence = {k: np.concatenate([p.evidence.get(k, np.full(len(p), np.nan)) for p in parts]) for k in kinds}
    found = [p.alerts for p in parts if len(p.alerts)]
    alerts = pd.concat(found, ignore_index=True) if found else empty_alerts()
    return WalkScores(batch.ts, evidence, flags, alerts)
