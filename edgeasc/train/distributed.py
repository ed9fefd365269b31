"""The process group of a training run: rank, world size, device, and the two collective
steps the loop needs besides DDP's gradient all-reduce."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch

from edgeasc.errors import ConfigError


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Dist:
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def resolve_device(name: str, dist: Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA device is available")
        return torch.device("cuda", dist.local_rank if dist.world > 1 else torch.device(name).index or 0)
    return torch.device("cpu")


def is_oom(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


@torch.no_grad()
def average_buffers(model: torch.nn.Module, world: int) -> None:
    """Average BatchNorm running statistics over the ranks: each rank's last forward updated
    them from its own shard, and evaluation (sharded) and the saved model need one set."""
    for name, buf in model.named_buffers():
        if buf is not None and buf.is_floating_point() and name.endswith(("running_mean", "running_var")):
            torch.distributed.all_reduce(buf)
            buf /= world


def state_digest(model: torch.nn.Module) -> int:
    h = hashlib.sha256()
    for t in model.state_dict().values():
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return int.from_bytes(h.digest()[:7], "little")
