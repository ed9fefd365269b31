"""The quickstart pipeline on built-in data: each stage prints what it produced.

It grows with the toolkit: today it inspects the paper's networks; the later stages
(synthesise -> train -> export -> bench -> predict) join as they land.
"""

from __future__ import annotations

from pathlib import Path

from edgeasc.console import out


def run_demo(workdir: Path) -> None:
    from edgeasc.models import PRESETS
    from edgeasc.models.complexity import analyse

    out.rule("[bold]edgeasc demo[/bold]: the paper's networks")
    for name, preset in PRESETS.items():
        stats = analyse(preset.config, prune_target=preset.prune_target)
        out.print(f"{name:<24} params {stats.params:>10,}  non-zero {stats.nonzero_params:>10,}  "
                  f"MACs/10 s {stats.macs / 1e9:6.3f} G  RF {stats.receptive_field[0]:>3}  "
                  f"fp16 bytes {stats.bytes['float16']:>10,}")
