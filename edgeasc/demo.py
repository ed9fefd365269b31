"""The quickstart pipeline on built-in data: each stage prints what it produced.

It grows with the toolkit. Today: synthesise a DCASE'20-layout dataset -> extract and
cache its features -> show the paper's networks and their budgets. Training, export,
bench and predict join as they land.
"""

from __future__ import annotations

import time
from pathlib import Path

from edgeasc.console import out


def run_demo(workdir: Path, clips_per_class: int = 40, seconds: float = 10.0, workers: int | None = None) -> dict:
    from edgeasc.data.cache import extract_features
    from edgeasc.data.dcase import open_dataset
    from edgeasc.data.synth import write_dataset
    from edgeasc.features import FeatureParams
    from edgeasc.models import PRESETS
    from edgeasc.models.complexity import analyse

    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / "synthetic-scenes"
    results: dict = {}

    out.rule("[bold]1. synthesise[/bold] a DCASE'20 task 1b style dataset")
    t0 = time.perf_counter()
    if (data_dir / "meta.csv").is_file():
        out.print(f"reusing {data_dir}")
    else:
        summary = write_dataset(data_dir, classes=3, clips_per_class=clips_per_class, seconds=seconds,
                                workers=workers)
        out.print(f"wrote {summary['clips']} clips of {seconds:g} s, 48 kHz stereo "
                  f"({summary['train']} train / {summary['evaluate']} evaluate, split by location) "
                  f"in {time.perf_counter() - t0:.1f} s")
    dataset = open_dataset(data_dir)
    results["dataset"] = dataset.summary()

    out.rule("[bold]2. features[/bold]: perceptual log-mel, cached once")
    cache, extracted = extract_features(dataset, FeatureParams(clip_seconds=seconds), workers=workers,
                                        root=workdir / "cache")
    e = cache.manifest["extraction"]
    out.print(f"{'extracted' if extracted else 'reused'} {e['clips']} clips → "
              f"train {cache.features('train').shape}, evaluate {cache.features('evaluate').shape} "
              f"({e['clips'] / e['seconds']:.1f} clips/s when extracted) in {cache.directory}")
    results["cache"] = str(cache.directory)

    out.rule("[bold]3. models[/bold]: the paper's networks and the DCASE 2020 500 KB budget")
    for name, preset in PRESETS.items():
        if not name.startswith("d20"):
            continue
        stats = analyse(preset.config, seconds=seconds, prune_target=preset.prune_target)
        fits = "fits" if stats.bytes["float16"] <= 512_000 else "too big"
        out.print(f"{name:<24} params {stats.params:>10,}  non-zero {stats.nonzero_params:>10,}  "
                  f"MACs/clip {stats.macs / 1e9:6.3f} G  RF {stats.receptive_field[0]:>3}  "
                  f"float16 {stats.bytes['float16']:>10,} bytes ({fits})")
    return results
