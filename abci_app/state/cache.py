"""A bounded cache, oldest entry out first: what the store and the runtime keep of work already done."""

from __future__ import annotations

from collections import OrderedDict


class BoundedCache(OrderedDict):
    """At most `size` entries; `put` drops the oldest when full and makes its key the newest.

    OrderedDict, not dict: evicting a dict's first key walks the deleted slots in front of
    it, which grow with every eviction (75 us per put once full, measured), while
    OrderedDict.popitem(last=False) is O(1)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key, value) -> None:
        self.pop(key, None)
        if len(self) >= self.size:
            self.popitem(last=False)
        self[key] = value
