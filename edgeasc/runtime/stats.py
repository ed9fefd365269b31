"""Per-window statistics in constant memory, for streams of any length (`listen`) and runs over
any number of files (`predict`). torch-free.

LogHistogram keeps quantiles of positive values (latencies) as counts in log-spaced bins: bin
i holds [low·r^i, low·r^(i+1)) with r = 1.02, and a quantile is reported as the geometric
centre of the bin holding the exact nearest-rank value, clamped to the exact min and max. So
for values in [low, high) the reported quantile is within a relative error of √r − 1 = 0.995 %
of the exact one (`relative_error`), whatever the count. 1,047 bins cover 1 µs to 1,000 s
(values in ms): 8 KiB of counts, allocated once. Values outside the range are counted in the
edge bins (a quantile that falls there is reported at the range's edge); min and max stay exact.
"""

from __future__ import annotations

import math

import numpy as np


class LogHistogram:
    def __init__(self, low: float = 1e-3, high: float = 1e6, ratio: float = 1.02):
        if not (0 < low < high and ratio > 1):
            raise ValueError("LogHistogram needs 0 < low < high and ratio > 1")
        self.low, self.ratio = low, ratio
        self._log_low, self._log_ratio = math.log(low), math.log(ratio)
        self.bins = math.ceil((math.log(high) - self._log_low) / self._log_ratio)
        self.counts = np.zeros(self.bins, dtype=np.int64)
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    @property
    def relative_error(self) -> float:
        """The bound on |reported − exact| / exact for a quantile of values within [low, high)."""
        return math.sqrt(self.ratio) - 1

    def add(self, value: float) -> None:
        i = int((math.log(value) - self._log_low) // self._log_ratio) if value > 0 else 0
        self.counts[min(max(i, 0), self.bins - 1)] += 1  # outside [low, high): the edge bins
        self.count += 1
        self.total += value
        self.min, self.max = min(self.min, value), max(self.max, value)

    def quantile(self, q: float) -> float | None:
        """The nearest-rank q-quantile (sorted(values)[min(int(q·n), n − 1)]: q = 0.5 is the upper
        median), within relative_error; None before the first value."""
        if self.count == 0:
            return None
        rank = min(int(q * self.count), self.count - 1)
        i = int(np.searchsorted(np.cumsum(self.counts), rank, side="right"))
        centre = math.exp(self._log_low + (i + 0.5) * self._log_ratio)
        return min(max(centre, self.min), self.max)

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


class WindowStats:
    """What a long run reports at its end: windows classified and skipped as silent, windows
    per top label, and the latency distribution of the classified ones; constant size (one counter per label)."""

    def __init__(self):
        self.windows = 0
        self.silent = 0
        self.labels: dict[str, int] = {}
        self.latency_ms = LogHistogram()

    def add(self, label: str | None, latency_ms: float) -> None:
        """One window: its top label (None: silent, not classified) and the time it took."""
        self.windows += 1
        if label is None:  # its level only was computed: not a classification's latency
            self.silent += 1
            return
        self.labels[label] = self.labels.get(label, 0) + 1
        self.latency_ms.add(latency_ms)

    def most_common(self, n: int = 3) -> list[tuple[str, int]]:
        return sorted(self.labels.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
