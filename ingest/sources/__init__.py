"""Where market data enters: every source yields raw batches, asynchronously, at a chosen speed."""

from ingest.sources.base import RawBatch, Source
from ingest.sources.replay import ArchReplay, FileReplay, FrameReplay

__all__ = ["ArchReplay", "FileReplay", "FrameReplay", "RawBatch", "Source"]
