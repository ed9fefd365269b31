"""The DCASE challenges' complexity rule sets: what each edition counts (non-zero or all
parameters, BatchNorm or not), its byte limit and its MACs limit (docs/method.md §6).

Here, in compress/, because both the budget fit (compress/fit.py, choosing a network that
passes) and the size report (export/report.py, measuring the exported one) read them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rules:
    name: str
    count: str              # "nonzero" or "all" (zeros included)
    count_bn: bool          # whether BatchNorm parameters count
    budget_bytes: int       # the edition's limit when --check-budget is not given
    macs_per_second: float | None
    description: str


RULES = {
    "dcase2020": Rules("dcase2020", "nonzero", False, 512_000, None,
                       "DCASE 2020 task 1b: 500 KB of non-zero parameters; the official counter leaves "
                       "BatchNorm out (the winners counted it: --count-bn)"),
    "dcase2021": Rules("dcase2021", "nonzero", True, 131_072, None,
                       "DCASE 2021 task 1a: 128 KB of non-zero parameters, BatchNorm counted"),
    "dcase2022": Rules("dcase2022", "all", True, 131_072, 30e6,
                       "DCASE 2022-2023 task 1: 128 KB of all parameters (zeros included), 30 M MACs per second"),
    "dcase2024": Rules("dcase2024", "all", True, 128_000, 30e6,
                       "DCASE 2024-2025 task 1: 128 000 bytes of all parameters, 30 M MACs per second"),
}
