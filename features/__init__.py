"""Every feature, defined once as a step over new rows with carried state; batch is one step.

Importing this package registers every feature kind (see :data:`features.base.REGISTRY`).
"""

from features import microstructure, price, volume
from features.base import REGISTRY, BarInput, Feature, make_feature, register
from features.engine import EngineState, FeatureEngine, FeatureFrame, FeatureSet

__all__ = [
    "REGISTRY",
    "BarInput",
    "EngineState",
    "Feature",
    "FeatureEngine",
    "FeatureFrame",
    "FeatureSet",
    "make_feature",
    "microstructure",
    "price",
    "register",
    "volume",
]
