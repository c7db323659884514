"""Cross-asset features over a universe of symbols: rolling and EW correlation matrices, betas to the market,
the VIX level, change, regime and correlations, and lead-lag spillover correlations.

See :mod:`features.cross_asset.engine` for the conventions (returns, windows, warm-up, NaN handling).
"""

from features.cross_asset.engine import (
    CorrelationMatrices,
    CrossAssetEngine,
    CrossAssetFrame,
    CrossAssetState,
    align_closes,
)

__all__ = ["CorrelationMatrices", "CrossAssetEngine", "CrossAssetFrame", "CrossAssetState", "align_closes"]
