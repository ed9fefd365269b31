#!/usr/bin/env bash
# GPU training check for the DCASE 2024/25 recipe: cp-mobile-d24 with `--recipe d24` on a
# synthetic TAU 2022 Mobile profile, on CUDA. It measures, in three parts:
#   1. end to end: `edgeasc train DATA --preset cp-mobile-d24 --recipe d24 --device cuda` for a
#      few hundred optimiser steps, with what --device cuda turns on by itself (--amp: bf16
#      autocast where the GPU has it, else fp16 with a gradient scaler; --channels-last), named
#      here so the log says so; its per-epoch lines report clips/s;
#   2. the training step alone, as the brief of this check asks: bf16 autocast + channels_last,
#      forward + backward + AdamW at batch 256 with the recipe's frequency masking and
#      Freq-MixStyle, on batches of the run's cached features already on the GPU: steps/s, clips/s;
#   3. the input pipeline alone: the feature cache through a DataLoader (pinned memory, WORKERS
#      worker processes, time roll) copied to the GPU with non_blocking, no network: steps/s, clips/s.
# Compare 2 and 3: when 3 is not several times 2, the loader, not the GPU, sets the pace.
#
#   bash scripts/gpu-check.sh [OUT_DIR]        (default: gpu-check/)
#
# Environment: PYTHON (default .venv/bin/python), EDGEASC_GPU_CLIPS (clips per class of the
# profile, default 2000: ~10,400 training clips, ~40 steps of 256 per epoch), EDGEASC_GPU_EPOCHS
# (default 8: ~325 steps), EDGEASC_GPU_STEPS (timed steps of parts 2 and 3, default 300),
# EDGEASC_GPU_WORKERS (DataLoader workers, default 8).
# Without a CUDA device it stops at once with one line and exit code 2. It is never run by the
# tests or CI: it needs a GPU, and minutes of it.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-$REPO/.venv/bin/python}
OUT=$(realpath -m "${1:-gpu-check}")
CLIPS=${EDGEASC_GPU_CLIPS:-2000}
EPOCHS=${EDGEASC_GPU_EPOCHS:-8}
STEPS=${EDGEASC_GPU_STEPS:-300}
WORKERS=${EDGEASC_GPU_WORKERS:-8}
fail() { echo "gpu-check: $*" >&2; exit 2; }

[ -x "$PY" ] || fail "no install at $PY: run scripts/setup.sh first (or set PYTHON)"
"$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null \
    || fail "no CUDA device (torch.cuda.is_available() is False): this check needs a GPU"

mkdir -p "$OUT"
DATA=$OUT/data CACHE=$OUT/cache RUN=$OUT/run
"$PY" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'gpu-check: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}')"
[ -f "$DATA/meta.csv" ] || "$PY" -m edgeasc synth "$DATA" --profile dcase2022 --clips-per-class "$CLIPS" --force

echo "gpu-check: 1/3 edgeasc train, $EPOCHS epochs (--amp, --channels-last, $WORKERS workers)"
# the recipe's 2000 warm-up steps are longer than this short run: warm up over one epoch instead
"$PY" -m edgeasc train "$DATA" --preset cp-mobile-d24 --recipe d24 --device cuda --amp --channels-last \
    --epochs "$EPOCHS" --warmup-epochs 1 --workers "$WORKERS" --cache-dir "$CACHE" --out "$RUN" --force \
    2>&1 | tee "$OUT/train.log"

echo "gpu-check: 2/3 training step alone, 3/3 input pipeline alone ($STEPS steps each, batch 256)"
EDGEASC_GPU_DATA=$DATA EDGEASC_GPU_CACHE=$CACHE EDGEASC_GPU_STEPS=$STEPS EDGEASC_GPU_WORKERS=$WORKERS \
PYTHONPATH=$REPO "$PY" - <<'EOF' | tee "$OUT/steps.log"
import os, time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

from edgeasc.data.cache import extract_features, probe_clip_seconds
from edgeasc.data.dcase import open_dataset
from edgeasc.data.loader import CachedFeatures, freq_mask, freq_mixstyle
from edgeasc.models import build_model
from edgeasc.models.presets import resolve_model
from edgeasc.runtime.features import frontend_params
from edgeasc.train.config import resolve_train_config
from edgeasc.train.loop import roll_frames

steps, workers, batch = int(os.environ["EDGEASC_GPU_STEPS"]), int(os.environ["EDGEASC_GPU_WORKERS"]), 256
dataset = open_dataset(os.environ["EDGEASC_GPU_DATA"])
cache, _ = extract_features(dataset, frontend_params("d24", probe_clip_seconds(dataset)),
                            root=Path(os.environ["EDGEASC_GPU_CACHE"]), progress=False)  # part 1 built it
cfg = resolve_train_config({"dataset": os.environ["EDGEASC_GPU_DATA"], "recipe": "d24", "preset": "cp-mobile-d24"})
data = CachedFeatures(cache, "train", train=True, roll=roll_frames(cfg, cache.manifest["params"]))


def loader():
    return DataLoader(data, batch_size=batch, sampler=RandomSampler(data, replacement=True, num_samples=batch * steps),
                      num_workers=workers, pin_memory=True, persistent_workers=workers > 0, drop_last=True)


def timed(label, run):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    n = run()
    torch.cuda.synchronize()
    s = time.perf_counter() - t0
    print(f"gpu-check: {label}: {n / s:.1f} steps/s, {n * batch / s:,.0f} clips/s ({n} steps of {batch})", flush=True)


# 2: the step alone, on batches already on the GPU (drawn from the cache once)
dev = torch.device("cuda")
config, _ = resolve_model("cp-mobile-d24", n_classes=len(cache.label_names))
model = build_model(config).to(dev).to(memory_format=torch.channels_last).train()
opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
style = tuple(float(v) for v in cfg.freq_mixstyle.split(","))
rng = np.random.default_rng(0)
batches = [(x.to(dev), y.to(dev)) for (x, y), _ in zip(loader(), range(8))]


def train_steps(n=steps):
    for i in range(n):
        x, y = batches[i % len(batches)]
        x = freq_mixstyle(freq_mask(x, rng, cfg.freq_mask), rng, *style).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return n


train_steps(20)  # warm-up: cuDNN autotuning, allocator
timed("training step (bf16 autocast, channels_last)", train_steps)


# 3: the input pipeline alone: cache -> workers -> pinned memory -> GPU
def pipeline():
    n = 0
    for x, y in loader():
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        n += 1
    return n


timed(f"input pipeline ({workers} workers, pinned memory)", pipeline)
EOF
echo "gpu-check: logs in $OUT (train.log, steps.log)"
