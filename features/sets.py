"""The default feature set: every per-asset bar feature of the system, fitted to the bar size."""

from __future__ import annotations

from typing import Any

from features import microstructure, price, volume
from features.base import make_feature
from features.engine import FeatureSet
from features.price import LogReturn
from features.volume import RelativeVolumeTimeOfDay
from ingest.records import NS_PER_MINUTE

#: Feature families in the default set, in column order.
FAMILIES = (price, volume, microstructure)


def default_specs() -> list[dict[str, Any]]:
    """Specifications of every per-asset bar feature, before fitting to a bar size."""
    specs: list[dict[str, Any]] = []
    for module in FAMILIES:
        specs.extend(dict(s) for s in module.DEFAULT_SPECS)
    return specs


def default_feature_set(interval_ns: int) -> FeatureSet:
    """The default set for bars of ``interval_ns``, fitted to the bar size.

    Left out: return horizons that are not a whole number of bars (a 1-minute return on daily bars), and, on
    bars shorter than a minute, relative volume by time of day (its state is one slot per bar of the day per
    session kept: 86,400 x 20 values on 1-second bars, 14 MB per symbol to checkpoint, for a per-second volume
    profile that is mostly noise; the 1-minute set carries it). Everything else is kept.
    """
    features = []
    for spec in default_specs():
        f = make_feature(spec)
        if isinstance(f, LogReturn) and not f.allowed(interval_ns):
            continue
        if isinstance(f, RelativeVolumeTimeOfDay) and interval_ns < NS_PER_MINUTE:
            continue
        features.append(f)
    return FeatureSet(tuple(features))
