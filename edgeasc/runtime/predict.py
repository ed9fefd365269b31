"""Classify recordings with an exported model, using nothing but what the ONNX file carries.
torch-free: decode + resample (audio.py), the numpy frontend (or the graph's own, for models
exported --with-frontend), normalisation from the metadata, onnxruntime.

Files, and a WAV stream on stdin, are read block by block (recording.py; memory: one block
and one window, whatever the length). Recordings longer than the window are classified in
sliding windows (windows.py; default: the model's clip length, no overlap); what the hops
leave at the end gets one more window aligned to the end of the recording (so no window is
padded), unless it is shorter than one STFT hop. The file's result is the mean of its
windows' class probabilities. A recording shorter than the window is zero-padded, as the
training clips were.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeasc.errors import ConfigError, EdgeascError
from edgeasc.runtime import audio
from edgeasc.runtime.deployed import DeployedModel
from edgeasc.runtime.inputs import model_input, softmax

# the window plan and the recording readers live in their own modules; their names stay importable here
from edgeasc.runtime.recording import (  # noqa: F401
    BLOCK_FRAMES,
    PipedRecording,
    StreamedRecording,
    recording_windows,
    stream_windows,
)
from edgeasc.runtime.windows import (  # noqa: F401
    MAX_WINDOWS,
    check_windows,
    plan_windows,
    too_many_windows,
    window_lengths,
    window_starts,
)


@dataclass
class Prediction:
    path: str
    labels: list[str]
    seconds: float = 0.0
    starts: list[float] = field(default_factory=list)  # window starts, seconds
    window_seconds: float = 0.0
    window_probabilities: np.ndarray | None = None  # (windows, classes)
    error: str | None = None

    @property
    def probabilities(self) -> np.ndarray:
        return self.window_probabilities.mean(axis=0)

    def top(self, k: int = 1, probabilities: np.ndarray | None = None) -> list[tuple[str, float]]:
        p = self.probabilities if probabilities is None else probabilities
        order = np.argsort(-p, kind="stable")[:k]
        return [(self.labels[i], float(p[i])) for i in order]

    def to_dict(self, top_k: int = 1) -> dict:
        if self.error:
            return {"file": self.path, "error": self.error}
        return {
            "file": self.path, "seconds": round(self.seconds, 3),
            "top": [{"label": label, "probability": p} for label, p in self.top(top_k)],
            "probabilities": {label: float(p) for label, p in zip(self.labels, self.probabilities, strict=True)},
            "windows": [{"start": round(s, 3), "end": round(s + self.window_seconds, 3),
                         "label": self.top(1, p)[0][0], "probability": self.top(1, p)[0][1],
                         "probabilities": [float(v) for v in p]}
                        for s, p in zip(self.starts, self.window_probabilities, strict=True)],
        }


def expand_inputs(paths: Sequence[str | Path], skipped: Callable[[str], None] | None = None) -> list[Path]:
    """The recordings to classify: files as given, "-" (stdin, once), and every audio file
    under a folder (recursively, sorted, hidden files and folders skipped). `skipped` hears one
    line per file of a folder that this machine cannot decode (MP3 before libsndfile 1.1)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if str(path) == "-":
            if any(str(p) == "-" for p in found):
                raise ConfigError("'-' (stdin) can be given once")
            found.append(path)
        elif path.is_dir():
            visible = sorted(f for f in path.rglob("*") if f.is_file()
                             and not any(part.startswith(".") for part in f.relative_to(path).parts))
            files = [f for f in visible if f.suffix.lower() in audio.AUDIO_SUFFIXES]
            if skipped is not None and not audio.MP3:
                for f in visible:
                    if f.suffix.lower() == ".mp3":
                        skipped(f"{f}: skipped: libsndfile {audio.sf.__libsndfile_version__} cannot decode MP3 "
                                "(1.1 or newer can)")
            if not files:
                raise ConfigError(f"{path}: a folder with no audio files ({', '.join(audio.AUDIO_SUFFIXES)})")
            found += files
        else:
            found.append(path)
    return found


def model_inputs(model: DeployedModel, path: str | Path, window: float | None = None, hop: float | None = None
                 ) -> tuple[np.ndarray, list[float], float]:
    """The model inputs of every window of one recording: (inputs, window starts in s, duration in s)."""
    x, starts, n_window, seconds = recording_windows(model, path, window, hop)
    params = model.feature_params
    inputs = [_window(model, x, s, n_window) for s in starts]
    return np.stack(inputs).astype(np.float32, copy=False), [s / params.sample_rate for s in starts], seconds


def _window(model: DeployedModel, x: np.ndarray, start: int, n_window: int) -> np.ndarray:
    return model_input(model, audio.fit_length(x[:, start:start + n_window], n_window))


BATCH_MACS = 2e9  # the default batch holds at most this many MACs of windows (and at least one window)
MAX_DEFAULT_BATCH = 8


def default_batch(model: DeployedModel, window: float | None = None) -> int:
    """Windows per onnxruntime call when --batch is not given: up to 8 for small networks, where
    batching saves per-call overhead, down to 1 for big ones, whose working memory grows with
    the batch for no speed (the authors' ρ4 w64 network: 479 MB at 8 windows of 10 s, 166 MB at
    1, the same time; benchmarks/RESULTS.md "Memory")."""
    macs = model.metadata.get("macs_per_clip")
    if not macs:
        return 1
    per_window = float(macs) * (window or model.clip_seconds) / model.clip_seconds
    return int(max(1, min(MAX_DEFAULT_BATCH, BATCH_MACS // max(per_window, 1.0))))


def predict_files(model: DeployedModel, paths: Sequence[str | Path], window: float | None = None,
                  hop: float | None = None, batch_size: int | None = None, progress=None) -> Iterator[Prediction]:
    """Predictions in input order. Windows are cut and classified `batch_size` at a time
    (default: default_batch(model)) (windows of consecutive files share batches), so memory
    holds one batch, one read block and one window, whatever the hop and the length: files are
    read block by block (stream_windows), "-" (stdin, a WAV stream) likewise (PipedRecording).
    An input that cannot be read, that runs out of memory, or on which the model outputs a
    non-finite number yields a Prediction with `error` set; the others are classified."""
    model.require_metadata("predict")
    check_windows(model, window, hop)
    batch_size = default_batch(model, window) if batch_size is None else batch_size
    if not 1 <= batch_size <= 4096:
        raise ConfigError(f"--batch must be between 1 and 4096, got {batch_size}")
    window_s = model.clip_seconds if window is None else window
    sr = model.feature_params.sample_rate
    # in input order: the prediction, its logits so far, and whether all its windows are cut
    waiting: list[tuple[Prediction, list[np.ndarray], list[bool]]] = []
    batch: list[np.ndarray] = []
    owners: list[tuple[Prediction, list[np.ndarray]]] = []

    def run_batch() -> None:
        try:
            logits = model.run(np.stack(batch).astype(np.float32, copy=False))
        except MemoryError:  # the batch's inputs lose it, not the run
            for prediction in {id(p): p for p, _ in owners}.values():
                prediction.error = prediction.error or f"{prediction.path}: out of memory while classifying"
        else:
            for (_, rows), row in zip(owners, logits, strict=True):
                rows.append(row)
        batch.clear()
        owners.clear()

    def finished() -> Iterator[Prediction]:
        while waiting and (waiting[0][0].error or (waiting[0][2][0] and len(waiting[0][1]) == len(waiting[0][0].starts))):
            prediction, rows, _ = waiting.pop(0)
            if not prediction.error:
                logits = np.asarray(rows, dtype=np.float64)
                if not np.isfinite(logits).all():
                    prediction.error = f"{prediction.path}: the model output a non-finite value (NaN or inf)"
                else:
                    prediction.window_probabilities = softmax(logits)
            yield prediction

    for path in paths:
        prediction = Prediction(str(path), model.labels, window_seconds=window_s)
        rows: list[np.ndarray] = []
        done = [False]
        waiting.append((prediction, rows, done))
        try:
            if str(path) == "-":
                recording: PipedRecording | StreamedRecording = PipedRecording(
                    model, sys.stdin.buffer, window, hop)
            else:
                recording = stream_windows(model, path, window, hop)
            for piece in recording.windows():
                batch.append(model_input(model, piece))
                owners.append((prediction, rows))
                if len(batch) == batch_size:
                    run_batch()
                    yield from finished()
                if prediction.error:  # out of memory in a batch: the rest of this input is not read
                    break
            prediction.starts = [s / sr for s in recording.starts]
            prediction.seconds = recording.seconds
            done[0] = True
        except EdgeascError as exc:  # unreadable, or a bad block mid-file: its windows so far are dropped
            prediction.error = str(exc)
        except MemoryError:  # one input too big for this machine: the others still get their results
            prediction.error = f"{path}: out of memory"
        if prediction.error:  # its windows still waiting in the batch are not classified
            keep = [i for i, (owner, _) in enumerate(owners) if owner is not prediction]
            batch[:] = [batch[i] for i in keep]
            owners[:] = [owners[i] for i in keep]
        if progress is not None:
            progress(1)
        yield from finished()
    if batch:
        run_batch()
    yield from finished()
