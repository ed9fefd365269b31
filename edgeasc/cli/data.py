"""`edgeasc synth` and `edgeasc features`: write a synthetic dataset, extract a dataset's features."""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box

from edgeasc.console import Table, out, print_json
from edgeasc.errors import ConfigError


def synth(
    out_dir: Path = typer.Argument(..., help="Folder to write the dataset into."),
    profile: str = typer.Option("dcase2020", help="dcase2020: 10-s 48 kHz stereo clips in the DCASE'20 layout; "
                                "dcase2022: 1-s 44.1 kHz mono clips, 10 scenes, 9 devices (3 unseen), in the "
                                "TAU 2022 Mobile layout with its split_setup/ train subsets."),
    classes: int | None = typer.Option(None, help="dcase2020: 3 (indoor/outdoor/transportation, DCASE'20 1b, the "
                                       "default) or 10 (DCASE'18 scenes); dcase2022 has 10."),
    clips_per_class: int | None = typer.Option(None, help="Clips per class (default 40; dcase2022: about 500)."),
    seconds: float | None = typer.Option(None, help="Clip length in seconds (dcase2020, default 10; dcase2022 is 1)."),
    seed: int = typer.Option(0, help="Random seed: the same seed writes the same audio."),
    workers: int | None = typer.Option(None, help="Worker processes (default: all cores)."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty OUT_DIR."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Write a synthetic acoustic-scene dataset (WAV clips, meta.csv, the official split files)."""
    if profile == "dcase2022":
        from edgeasc.data.synth2022 import DEFAULT_CLIPS_PER_CLASS, write_dataset_2022

        if classes not in (None, 10):
            raise ConfigError(f"--profile dcase2022 has 10 classes (TAU 2022 Mobile), not {classes}")
        if seconds not in (None, 1.0):
            raise ConfigError(f"--profile dcase2022 writes 1-s clips (TAU 2022 Mobile), not {seconds:g} s")
        summary = write_dataset_2022(out_dir, DEFAULT_CLIPS_PER_CLASS if clips_per_class is None else clips_per_class,
                                     seed, workers, force,
                                     progress=not as_json)
    elif profile == "dcase2020":
        from edgeasc.data.synth import write_dataset

        summary = write_dataset(out_dir, classes or 3, 40 if clips_per_class is None else clips_per_class,
                                10.0 if seconds is None else seconds, seed, workers, force, progress=not as_json)
    else:
        raise ConfigError(f"--profile must be dcase2020 or dcase2022, got {profile!r}")
    if as_json:
        print_json(summary)
        return
    devices = (f"; devices {', '.join(summary['seen_devices'])} seen, {', '.join(summary['unseen_devices'])} "
               "only in evaluate") if "seen_devices" in summary else ""
    out.print(f"wrote {summary['clips']} clips of {summary['seconds']:g} s ({summary['train']} train, "
              f"{summary['evaluate']} evaluate; classes: {', '.join(summary['labels'])}{devices}) to "
              f"{summary['path']}", soft_wrap=True)


def features(
    dataset_dir: Path = typer.Argument(..., help="A DCASE development set, a folder per class, or a labels CSV."),
    workers: int | None = typer.Option(None, help="Worker processes (default: all cores, at most one per 64 clips)."),
    cache_dir: Path | None = typer.Option(None, help="Cache root (default: $EDGEASC_CACHE or ~/.cache/edgeasc)."),
    channels: int | None = typer.Option(None, help="1 or 2 input channels (default: as the audio)."),
    seconds: float | None = typer.Option(None, help="Clip length: shorter clips are zero-padded, longer cropped "
                                         "(default: the data's own, e.g. 1 s for TAU 2022, 10 s for TAU 2020)."),
    fold: int = typer.Option(1, help="Official fold to read."),
    split: int | None = typer.Option(None, help="TAU 2022 Mobile: train on split_setup/splitN.csv (5, 10, 25, 50, 100)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Extract (once) and cache the perceptual mel features of a dataset, with normalisation stats."""
    from edgeasc.data.cache import extract_features, probe_clip_seconds
    from edgeasc.data.dcase import open_dataset
    from edgeasc.runtime.features import FeatureParams

    if channels not in (None, 1, 2):
        raise ConfigError(f"--channels must be 1 or 2, got {channels}")
    if seconds is not None and not 0 < seconds <= 600:
        raise ConfigError(f"--seconds must be in (0, 600], got {seconds}")
    dataset = open_dataset(dataset_dir, fold=fold, split=split)
    seconds = seconds or probe_clip_seconds(dataset)
    cache, extracted = extract_features(dataset, FeatureParams(clip_seconds=seconds), channels, workers,
                                        cache_dir, progress=not as_json)
    m = cache.manifest
    summary = {"layout": m["layout"], "labels": m["labels"], "cache": str(cache.directory),
               "extracted": extracted, "channels": m["channels"], "frames": m["frames"],
               "splits": {s: len(m["splits"][s]["clips"]) for s in m["splits"]},
               "devices": sorted({d for s in m["splits"].values() for d in s["devices"] if d}),
               "extraction": m["extraction"]}
    if as_json:
        print_json(summary)
        return
    table = Table(title=f"features of {dataset.root}", box=box.SIMPLE_HEAD, show_header=False)
    table.add_column(justify="left")
    table.add_column(justify="left")
    table.add_row("layout", m["layout"])
    table.add_row("classes", ", ".join(m["labels"]))
    for split, n in summary["splits"].items():
        table.add_row(split, f"{n} clips × {m['channels']} ch × {m['params']['n_mels']} mels × {m['frames']} frames")
    if summary["devices"]:
        table.add_row("devices", ", ".join(summary["devices"]))
    table.add_row("cache", summary["cache"])
    e = m["extraction"]
    rate = e["clips"] / e["seconds"] if e["seconds"] else float("nan")
    table.add_row("extraction", f"{e['clips']} clips in {e['seconds']:.1f} s ({rate:.1f} clips/s, "
                  f"{e['workers']} workers)" + ("" if extracted else " — reused, nothing to do"))
    out.print(table)
