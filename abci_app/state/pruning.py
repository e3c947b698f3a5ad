"""Pruning settings: how many committed heights' tries a node keeps, as Cosmos nodes' `pruning` options.

Pruning deletes only what no retained height can reach, so it never changes an
app hash: it is a node-local setting, free to differ between nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

STRATEGIES = ("default", "everything", "nothing", "custom")
DEFAULT_KEEP_RECENT = 362_880  # Cosmos' "default": ~3 weeks of 5 s blocks
EVERYTHING_KEEP_RECENT = 2  # Cosmos' "everything": the latest height and the one before
DEFAULT_INTERVAL = 10  # heights between pruning runs, as Cosmos; each run deletes every prunable height at once


@dataclass(frozen=True)
class Pruning:
    """keep_recent = 0 keeps every height (archive); otherwise the last keep_recent heights, plus protected ones."""

    keep_recent: int = 0
    interval: int = 1

    def __post_init__(self) -> None:
        if self.keep_recent < 0:
            raise ValueError(f"pruning keep_recent must be >= 0 (0 = keep everything), got {self.keep_recent}")
        if self.interval < 1:
            raise ValueError(f"pruning interval must be >= 1, got {self.interval}")

    @property
    def archive(self) -> bool:
        return self.keep_recent == 0

    @classmethod
    def named(cls, strategy: str, keep_recent: int | None = None, interval: int | None = None) -> Pruning:
        """The settings for a strategy name; keep_recent and interval are for "custom" only."""
        if strategy not in STRATEGIES:
            raise ValueError(f"pruning must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        if strategy != "custom":
            if keep_recent is not None or interval is not None:
                raise ValueError(f"pruning keep-recent and interval go with pruning=custom, not {strategy!r}")
            return {
                "default": cls(DEFAULT_KEEP_RECENT, DEFAULT_INTERVAL),
                "everything": cls(EVERYTHING_KEEP_RECENT, DEFAULT_INTERVAL),
                "nothing": cls(0, 1),
            }[strategy]
        if keep_recent is None or keep_recent < 1:
            raise ValueError("pruning=custom needs keep-recent >= 1 (pruning=nothing keeps everything)")
        return cls(keep_recent, DEFAULT_INTERVAL if interval is None else interval)

    def describe(self) -> str:
        if self.archive:
            return "archive (keeps every height)"
        return f"keeps the last {self.keep_recent} heights and snapshot heights, prunes every {self.interval}"


ARCHIVE = Pruning()
