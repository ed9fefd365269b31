"""PNG plots of a run (matplotlib, headless), written atomically."""

from __future__ import annotations

from pathlib import Path

from edgeasc.io import atomic_write


def save_png(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: list[dict], path: Path) -> None:
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(epochs, [h["train_loss"] for h in history], label="train (mixup)")
    ax1.plot(epochs, [h["eval_loss"] for h in history], label="evaluate")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("cross-entropy")
    ax1.legend()
    ax2.plot(epochs, [100 * h["eval_accuracy"] for h in history], color="tab:green")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("evaluate accuracy (%)")
    ax2.set_ylim(0, 100)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    save_png(fig, path)


def plot_nonzero(history: list[dict], target: int | None, path: Path) -> None:
    """Non-zero parameters per epoch; with channel pruning also all parameters and MACs per clip
    (the physically smaller network), MACs on a second axis."""
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    structured = any(h.get("channels_removed") for h in history)
    fig, ax = plt.subplots(figsize=(6.5 if structured else 5.5, 3.6))
    ax.plot(epochs, [h["nonzero_params"] for h in history], marker=".", label="non-zero parameters")
    if structured:
        ax.plot(epochs, [h["params"] for h in history], marker=".", label="all parameters")
        ax2 = ax.twinx()
        ax2.plot(epochs, [h["macs"] / 1e6 for h in history], color="tab:purple", ls=":", marker=".")
        ax2.set_ylabel("MACs per clip (M)", color="tab:purple")
        ax2.set_ylim(bottom=0)
    if target:
        ax.axhline(target, color="tab:red", ls="--", label=f"target {target:,}")
    if target or structured:
        ax.legend(fontsize=8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("parameters")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    save_png(fig, path)


def plot_confusion(confusion: list[list[int]], labels: list[str], path: Path, title: str = "") -> None:
    import numpy as np

    plt = pyplot()
    conf = np.asarray(confusion, dtype=float)
    norm = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.55 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{int(conf[i, j])}", ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_title(title)
    save_png(fig, path)


def plot_devices(result: dict, path: Path, title: str = "") -> bool:
    """Accuracy per recording device, seen (trained on) and unseen devices apart, with the mean
    of each group as DCASE reports it. Returns False (and writes nothing) for fewer than two
    devices: a single bar says nothing."""
    per_device = result.get("per_device") or {}
    if len(per_device) < 2:
        return False
    plt = pyplot()
    unseen = set(result.get("unseen_devices") or [])
    names = sorted(per_device, key=lambda d: (d in unseen, d))
    fig, ax = plt.subplots(figsize=(max(4.5, 0.6 * len(names) + 2.5), 3.6))
    colours = ["tab:orange" if d in unseen else "tab:blue" for d in names]
    ax.bar(names, [100 * per_device[d] for d in names], color=colours)
    for d, x in zip(names, range(len(names)), strict=True):
        ax.text(x, 100 * per_device[d] + 1, f"{result['device_counts'][d]}", ha="center", fontsize=7, color="dimgray")
    for group, colour, key in (("seen", "tab:blue", "seen_accuracy"), ("unseen", "tab:orange", "unseen_accuracy")):
        if result.get(key) is not None:
            ax.axhline(100 * result[key], color=colour, ls="--", lw=1,
                       label=f"mean over {group} devices: {100 * result[key]:.1f} %")
    ax.set_ylim(0, 105)
    ax.set_ylabel("accuracy (%)")
    ax.set_xlabel("device (clip counts above the bars)")
    ax.grid(axis="y", alpha=0.3)
    if result.get("seen_accuracy") is not None or result.get("unseen_accuracy") is not None:
        ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title)
    save_png(fig, path)
    return True
