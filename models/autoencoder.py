"""An LSTM autoencoder over sliding windows of the standardised feature vector (torch, CPU).

The feature vector of each bar is the one of :mod:`models.ml` (the ``columns`` parameter, robustly standardised
over the history, :class:`~models.ml.RobustScale`), limited to +-:data:`CLIP` standardised units so that a few
extreme bars cannot dominate the training loss. A window is ``window`` consecutive bars. The network reads a
window with an LSTM encoder, keeps its last hidden state (the code), feeds the code at every step to an LSTM
decoder and maps the decoder's outputs back to the features through a linear layer: it learns to reconstruct
the windows of the history and reconstructs unusual windows badly.

The raw score of a row is the reconstruction error of the window ending at it, the mean squared error over its
``window x len(columns)`` values (standardised units squared); the detail column ``last_row`` is the mean squared
error of the row itself, the window's last. A stream starts empty: its first ``window - 1`` rows score NaN.
A row with a missing or infinite feature breaks every window it is in: the row and the ``window - 1`` rows after
it score NaN, whatever the split of the stream into batches.

Exactness: a window's score must not depend on the split of the stream, yet a batched forward pass can round
differently with the batch's size and a window's place in it. Windows are therefore scored in chunks of
:data:`CHUNK` aligned to the count of rows the stream has seen: the window ending at the stream's row ``k`` always
sits in slot ``k % CHUNK`` of a ``(CHUNK, window, d)`` float64 input (empty slots zero), so every window is
computed by the same arithmetic in any split. Training runs in float32 on one thread from a fixed seed; the fitted
weights are kept as float64 numpy arrays (:attr:`LstmAutoencoder.weights_`), so the detector pickles without
torch state, and the network is rebuilt from them on first use.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ingest.records import F64
from models.base import Observations, Scores, check_positive_float, check_positive_int, register
from models.ml import DEFAULT_COLUMNS, MIN_ROWS, FeatureVectorDetector, RobustScale, check_columns, feature_rows

#: Standardised feature values are limited to +-CLIP before they reach the network (robust standard units).
CLIP = 10.0
#: Windows per forward pass when scoring; a window's slot in it is fixed by the stream's row count.
CHUNK = 64


class _Network(nn.Module):
    """Encoder LSTM -> last hidden state -> decoder LSTM fed that state at every step -> linear map to features."""

    def __init__(self, features: int, hidden: int) -> None:
        super().__init__()
        self.encoder = nn.LSTM(features, hidden, batch_first=True)
        self.decoder = nn.LSTM(hidden, hidden, batch_first=True)
        self.output = nn.Linear(hidden, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.encoder(x)
        code = h[-1].unsqueeze(1).expand(-1, x.shape[1], -1)
        y, _ = self.decoder(code)
        out: torch.Tensor = self.output(y)
        return out


@contextmanager
def _torch_settings() -> Iterator[None]:
    """One intra-op thread and deterministic algorithms inside the block; the process's settings after it."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.set_num_threads(threads)


def window_rows(x: F64, window: int) -> tuple[F64, np.ndarray]:
    """The windows of ``window`` consecutive rows of ``x`` (shape (n, d)), one per row from the ``window``-th on.

    Returns
    -------
    windows : ndarray of float64, shape (n - window + 1, window, d)
        A read-only view: ``windows[i]`` is ``x[i : i + window]``.
    complete : ndarray of bool, shape (n - window + 1,)
        Whether every value of the window is finite.
    """
    n, d = x.shape
    if n < window:
        return np.empty((0, window, d)), np.zeros(0, dtype=np.bool_)
    windows = np.lib.stride_tricks.sliding_window_view(x, window, axis=0).transpose(0, 2, 1)
    finite = np.isfinite(x).all(axis=1)
    counts = np.convolve(finite.astype(np.int64), np.ones(window, dtype=np.int64), mode="valid")
    return windows, counts == window


@dataclass
class _WindowState:
    """A stream's state: its last ``window - 1`` standardised rows (NaN before the stream) and the rows seen."""

    tail: F64
    seen: int = 0


@register
class LstmAutoencoder(FeatureVectorDetector):
    """LSTM autoencoder reconstruction error of the window of bars ending at each row (see the module doc).

    Parameters
    ----------
    columns : tuple of str
        Feature columns of the vector (default :data:`~models.ml.DEFAULT_COLUMNS`).
    window : int
        Bars per window, >= 2.
    hidden : int
        Size of the LSTM states (the code), >= 1.
    epochs : int
        Passes over the training windows, >= 1.
    batch_size : int
        Windows per optimiser step, >= 1.
    learning_rate : float
        Adam's step size, > 0.
    max_train : int
        Training windows at most: beyond it an even subsample of the history's complete windows (bounds the fit's
        time), >= 1.
    random_state : int
        Seed of the initial weights and of the order of the training windows: the same seed and history give the
        same network.

    Attributes
    ----------
    weights_ : dict of str to ndarray of float64
        The fitted network's ``state_dict``.
    loss_ : float
        The mean training loss of the last epoch (standardised units squared).
    """

    name: ClassVar[str] = "lstm_autoencoder"
    _network: _Network | None

    def __init__(
        self,
        columns: tuple[str, ...] = DEFAULT_COLUMNS,
        window: int = 16,
        hidden: int = 16,
        epochs: int = 15,
        batch_size: int = 64,
        learning_rate: float = 0.01,
        max_train: int = 1024,
        random_state: int = 0,
    ) -> None:
        self.columns = columns
        self.window = window
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.max_train = max_train
        self.random_state = random_state

    # ---- parameters ------------------------------------------------------------------------------------
    def _window(self) -> int:
        return check_positive_int("window", self.window, minimum=2)

    def _check_params(self) -> None:
        self._window()
        check_positive_int("hidden", self.hidden)
        check_positive_int("epochs", self.epochs)
        check_positive_int("batch_size", self.batch_size)
        check_positive_float("learning_rate", self.learning_rate)
        check_positive_int("max_train", self.max_train)
        seed = self.random_state
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 2**63:
            raise ValueError(f"random_state={seed!r}: must be a non-negative integer")

    # ---- fitting ---------------------------------------------------------------------------------------
    def _fit(self, history: Observations) -> None:
        self._check_params()
        window = self._window()
        x = feature_rows(history, check_columns(self.columns))
        complete_rows = x[np.isfinite(x).all(axis=1)]
        windows, complete = window_rows(x, window)
        if len(complete_rows) < MIN_ROWS or int(complete.sum()) < MIN_ROWS:
            raise ValueError(
                f"history: {len(history)} rows, {len(complete_rows)} with every column of {self.columns} finite "
                f"and {int(complete.sum())} complete windows of window={window}; at least {MIN_ROWS} of each needed"
            )
        self.scaler_ = RobustScale.fit(complete_rows)
        train = windows[complete]
        if len(train) > self.max_train:
            train = train[np.linspace(0, len(train) - 1, int(self.max_train)).round().astype(np.int64)]
        train = np.clip(self.scaler_.transform(train), -CLIP, CLIP)
        self.weights_, self.loss_ = self._train(train)
        self._network = None

    def _train(self, train: F64) -> tuple[dict[str, F64], float]:
        """Fit the network on the standardised windows ``train`` (float32, one thread, seeded)."""
        with _torch_settings(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.random_state))
            generator = torch.Generator().manual_seed(int(self.random_state))
            net = _Network(train.shape[2], int(self.hidden))
            optimiser = torch.optim.Adam(net.parameters(), lr=float(self.learning_rate))
            data = torch.tensor(train, dtype=torch.float32)
            size = int(self.batch_size)
            loss_sum, steps = 0.0, 0
            for _ in range(int(self.epochs)):
                order = torch.randperm(len(data), generator=generator)
                loss_sum, steps = 0.0, 0
                for start in range(0, len(data), size):
                    batch = data[order[start : start + size]]
                    optimiser.zero_grad()
                    loss = torch.mean((net(batch) - batch) ** 2)
                    torch.autograd.backward(loss)
                    optimiser.step()
                    loss_sum += float(loss.detach())
                    steps += 1
            weights = {k: v.detach().to(torch.float64).numpy().copy() for k, v in net.state_dict().items()}
        return weights, loss_sum / max(steps, 1)

    def _net(self) -> _Network:
        """The fitted network in float64, built from :attr:`weights_` on first use."""
        net: _Network | None = getattr(self, "_network", None)
        if net is None:
            d = len(check_columns(self.columns))
            net = _Network(d, int(self.hidden)).double()
            net.load_state_dict({k: torch.tensor(v) for k, v in self.weights_.items()})
            net.eval()
            self._network = net
        return net

    def __getstate__(self) -> dict[str, Any]:
        state = dict(vars(self))
        state.pop("_network", None)  # rebuilt from weights_
        return state

    # ---- scoring ---------------------------------------------------------------------------------------
    def _initial_state(self) -> Any:
        d = len(check_columns(self.columns))
        return _WindowState(np.full((self._window() - 1, d), np.nan))

    def _step(self, state: Any, batch: Observations) -> Scores:
        n = len(batch)
        x = np.clip(self.standardised(batch), -CLIP, CLIP)  # NaN stays NaN
        full = np.concatenate((state.tail, x))
        windows, complete = window_rows(full, self._window())
        raw = np.full(n, np.nan)
        last = np.full(n, np.nan)
        rows = np.flatnonzero(complete)  # batch rows whose window is complete
        if len(rows):
            slots = (state.seen + rows) % CHUNK
            chunks = (state.seen + rows) // CHUNK
            bounds = np.flatnonzero(np.diff(chunks)) + 1
            with _torch_settings(), torch.no_grad():
                net = self._net()
                for part_rows, part_slots in zip(np.split(rows, bounds), np.split(slots, bounds), strict=True):
                    inputs = np.zeros((CHUNK, *windows.shape[1:]))
                    inputs[part_slots] = windows[part_rows]
                    outputs = net(torch.tensor(inputs, dtype=torch.float64)).numpy()
                    squared = (outputs - inputs) ** 2  # the same shape in every call: the same arithmetic per slot
                    raw[part_rows] = squared.mean(axis=(1, 2))[part_slots]
                    last[part_rows] = squared[:, -1, :].mean(axis=1)[part_slots]
        keep = self._window() - 1
        state.tail = full[len(full) - keep :].copy()
        state.seen += n
        return Scores(batch.ts, raw, raw, {"last_row": last})
