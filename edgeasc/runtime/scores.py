"""Scene-classification scores from counts, without torch: plain accuracy, the class-wise
(macro-average) accuracy that ranks DCASE 2024/25 task 1, accuracy per device, and the means
over the challenge's device groups. The workstation's `edgeasc eval` and a device-side
evaluation compute their counts differently and score them here, the same way.

A class without a single clip has no accuracy (None): the macro average is the mean over the
classes that have clips, and names the others (the reference implementations would give NaN).
Devices outside DCASE 2022+'s nine are listed with their own accuracy but belong to no group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# TAU Urban Acoustic Scenes 2022 Mobile and its successors: three real devices, three
# simulated ones in training (seen), three more only in the test data (unseen).
DCASE_DEVICE_GROUPS: dict[str, str] = {"a": "real", "b": "real", "c": "real", "s1": "seen", "s2": "seen",
                                       "s3": "seen", "s4": "unseen", "s5": "unseen", "s6": "unseen"}
GROUPS = ("real", "seen", "unseen")


def class_accuracies(confusion: Sequence[Sequence[int]]) -> list[float | None]:
    """Per class (rows: true class, columns: predicted): correct / clips, None without clips."""
    out: list[float | None] = []
    for i, row in enumerate(confusion):
        total = sum(int(v) for v in row)
        out.append(int(row[i]) / total if total else None)
    return out


def macro_accuracy(confusion: Sequence[Sequence[int]]) -> float | None:
    """The mean of the per-class accuracies over the classes that have clips; None without any."""
    present = [a for a in class_accuracies(confusion) if a is not None]
    return sum(present) / len(present) if present else None


def device_group_means(per_device: Mapping[str, float]) -> dict[str, float | None]:
    """The mean of the per-device accuracies of each DCASE group present (None: no device of it)."""
    out: dict[str, float | None] = {}
    for group in GROUPS:
        accs = [acc for dev, acc in per_device.items() if DCASE_DEVICE_GROUPS.get(dev) == group]
        out[group] = sum(accs) / len(accs) if accs else None
    return out


def scores(confusion: Sequence[Sequence[int]], labels: Sequence[str],
           device_correct: Mapping[str, int], device_total: Mapping[str, int]) -> dict:
    """Everything above from a confusion matrix and per-device counts (devices with no clip are
    left out). Returns plain Python values, JSON-ready."""
    if len(confusion) != len(labels) or any(len(row) != len(labels) for row in confusion):
        raise ValueError(f"a {len(labels)}-class confusion matrix is {len(labels)} × {len(labels)}")
    n = sum(int(v) for row in confusion for v in row)
    correct = sum(int(confusion[i][i]) for i in range(len(labels)))
    per_class = class_accuracies(confusion)
    per_device = {d: int(device_correct.get(d, 0)) / int(t) for d, t in device_total.items() if int(t)}
    return {"n": n, "accuracy": correct / n if n else None, "macro_accuracy": macro_accuracy(confusion),
            "per_class": dict(zip(labels, per_class, strict=True)),
            "classes_without_clips": [name for name, acc in zip(labels, per_class, strict=True) if acc is None],
            "per_device": per_device, "device_groups": device_group_means(per_device),
            "other_devices": sorted(d for d in per_device if d not in DCASE_DEVICE_GROUPS)}
