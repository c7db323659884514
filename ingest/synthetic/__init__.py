"""A synthetic multi-asset market with labelled anomalies: trades, quotes and one-minute bars.

>>> from ingest.synthetic import SimulationConfig, simulate
>>> result = simulate(SimulationConfig(seed=7, assets=("SPY", "BTC-USD")))
>>> {label.kind for label in result.labels} >= {"flash_crash", "data_gap"}
True
"""

from ingest.synthetic.anomalies import KINDS, Label
from ingest.synthetic.market import REGIMES, SimulationConfig, SimulationResult, simulate
from ingest.synthetic.output import write_simulation
from ingest.synthetic.universe import UNIVERSE, AssetClass, AssetSpec, Session, target_correlation

__all__ = [
    "KINDS",
    "REGIMES",
    "UNIVERSE",
    "AssetClass",
    "AssetSpec",
    "Label",
    "Session",
    "SimulationConfig",
    "SimulationResult",
    "simulate",
    "target_correlation",
    "write_simulation",
]
