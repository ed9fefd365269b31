"""`edgeasc eval` and `edgeasc info RUN`: load a run's model and describe or evaluate it."""

from __future__ import annotations

from pathlib import Path

from edgeasc.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from edgeasc.data.cache import extract_features
from edgeasc.data.dcase import open_dataset
from edgeasc.evaluate import evaluate
from edgeasc.export.clips import run_cache_root
from edgeasc.runtime.features import FeatureParams


def evaluate_run(run: Path, dataset_dir: Path | None = None, cache_dir: Path | None = None,
                 device: str = "auto", progress: bool = True) -> dict:
    import torch

    ckpt = load_checkpoint(run)
    model = model_from_checkpoint(ckpt)
    data = Path(dataset_dir) if dataset_dir else None
    if data is None:
        cfg = ckpt.get("train_config") or {}
        if cfg.get("dataset"):
            data = Path(cfg["dataset"])
        else:
            from edgeasc.data.cache import cache_root
            from edgeasc.data.synth import default_dataset

            data = default_dataset(Path(cfg["cache_dir"]) if cfg.get("cache_dir") else cache_root(), progress)
    # the run's own train subset (TAU 2022 --split) when evaluating on its own dataset
    split = (ckpt.get("train_config") or {}).get("split") if dataset_dir is None else None
    dataset = open_dataset(data, split=split)
    if dataset.labels != ckpt["labels"]:
        raise CheckpointError(f"{data}: classes {dataset.labels} differ from the model's {ckpt['labels']}")
    params = FeatureParams(**ckpt["feature_params"])
    # the run's own cache root by default: evaluating what it trained on reuses its features
    root = Path(cache_dir) if cache_dir else run_cache_root(ckpt)
    cache, _ = extract_features(dataset, params, channels=ckpt["channels"], root=root, progress=progress)
    # normalise with the statistics the model was trained with, not this dataset's
    cache.manifest = {**cache.manifest, "normalization": ckpt["normalization"]}
    dev = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    # seen = the devices of the model's own training data, whatever dataset it is evaluated on
    result = evaluate(model.to(dev), cache, device=dev, seen_devices=ckpt.get("devices")).to_dict()
    run_dir = Path(ckpt["path"]).parent
    png = run_dir / "confusion-eval.png"
    from edgeasc.plots import plot_confusion, plot_devices

    plot_confusion(result["confusion"], ckpt["labels"], png, f"accuracy {100 * result['accuracy']:.1f} %")
    devices_png = run_dir / "devices-eval.png"
    if not plot_devices(result, devices_png, f"accuracy per device on {dataset.root.name}"):
        devices_png.unlink(missing_ok=True)  # a plot of another dataset would mislead
    return {**result, "labels": ckpt["labels"], "checkpoint": ckpt["path"], "dataset": str(dataset.root),
            "confusion_png": str(png), "devices_png": str(devices_png) if devices_png.exists() else None}


def describe_checkpoint(path: Path, seconds: float | None = None) -> tuple[dict, object]:
    """Complexity of a trained model (non-zeros counted from its weights), its labels and metrics."""
    from edgeasc.models.complexity import analyse

    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt)
    if seconds is None:  # the clip length the run was trained on
        seconds = float(ckpt["feature_params"].get("clip_seconds", 10.0))
    stats = analyse(model, seconds=seconds)
    extra = {"checkpoint": ckpt["path"], "kind": ckpt.get("kind"), "labels": ckpt["labels"],
             "epoch": ckpt["epoch"], "summary": ckpt.get("summary"),
             "last_metrics": (ckpt.get("history") or [None])[-1], "feature_params": ckpt["feature_params"],
             "teachers": ckpt.get("teachers"), "fit": ckpt.get("fit"),
             "kd": {k: (ckpt.get("train_config") or {}).get(k) for k in ("kd_weight", "kd_temperature", "kd_targets")}
             if ckpt.get("teachers") else None}
    return extra, stats
