"""Cross-asset features over a universe of symbols: rolling and EW correlation matrices, betas to the market,
the VIX level, change, regime and correlations, lead-lag correlations, and the Diebold-Yilmaz spillover index
of a rolling VAR (:mod:`features.cross_asset.spillover`).

See :mod:`features.cross_asset.engine` for the conventions (returns, windows, warm-up, NaN handling).
"""

from features.cross_asset.engine import (
    CorrelationMatrices,
    CrossAssetEngine,
    CrossAssetFrame,
    CrossAssetState,
    align_closes,
)
from features.cross_asset.spillover import SpilloverIndex, generalised_fevd

__all__ = [
    "CorrelationMatrices",
    "CrossAssetEngine",
    "CrossAssetFrame",
    "CrossAssetState",
    "SpilloverIndex",
    "align_closes",
    "generalised_fevd",
]
