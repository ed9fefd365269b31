"""Classify recordings with an exported model, using nothing but what the ONNX file carries.
torch-free: decode + resample (audio.py), the numpy frontend (or the graph's own, for models
exported --with-frontend), normalisation from the metadata, onnxruntime.

Files are read block by block (memory: one block and one window, whatever the length; the
samples equal the whole-file path's exactly). Recordings longer than the window are
classified in sliding windows (default: the model's
clip length, no overlap); what the hops leave at the end gets one more window aligned to the
end of the recording (so no window is padded), unless it is shorter than one STFT hop. The file's result is the mean of its windows' class probabilities. A
recording shorter than the window is zero-padded, as the training clips were.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from edgeasc.errors import ConfigError, EdgeascError
from edgeasc.runtime import audio
from edgeasc.runtime.audio import AUDIO_SUFFIXES
from edgeasc.runtime.deployed import DeployedModel
from edgeasc.runtime.features import perceptual_mel


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


def window_starts(n: int, window: int, hop: int, min_overhang: int = 1) -> list[int]:
    """Sample offsets of the windows over `n` samples. What the hop grid leaves uncovered at the
    end gets one more window, aligned to end at `n`, when it is at least `min_overhang`
    samples (one STFT hop: less moves no feature frame, and recorders often overshoot a clip
    by a few samples); so no two windows ever share a span."""
    if n <= window:
        return [0]
    starts = list(range(0, n - window + 1, hop))
    if n - (starts[-1] + window) >= max(1, min_overhang):
        starts.append(n - window)
    return starts


def expand_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """The recordings to classify: files as given, "-" (stdin, once), and every audio file
    under a folder (recursively, sorted, hidden files and folders skipped)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if str(path) == "-":
            if any(str(p) == "-" for p in found):
                raise ConfigError("'-' (stdin) can be given once")
            found.append(path)
        elif path.is_dir():
            files = sorted(f for f in path.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES and f.is_file()
                           and not any(part.startswith(".") for part in f.relative_to(path).parts))
            if not files:
                raise ConfigError(f"{path}: a folder with no audio files ({', '.join(AUDIO_SUFFIXES)})")
            found += files
        else:
            found.append(path)
    return found


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


MAX_WINDOWS = 100_000  # per recording: a 10-s hop over a day, or one frame's hop over 40 minutes


def recording_windows(model: DeployedModel, path: str | Path, window: float | None = None,
                      hop: float | None = None) -> tuple[np.ndarray, list[int], int, float]:
    """A recording decoded whole at the model's rate, its window starts (samples), the window
    length (samples) and the duration (s). `predict` streams files instead (stream_windows);
    this whole-file path reads stdin and is the reference the streaming one is tested against."""
    x, sr = audio.load(path, sample_rate=model.feature_params.sample_rate, channels=model.channels)
    starts, n_window = plan_windows(model, path, x.shape[-1], window, hop)
    return x, starts, n_window, x.shape[-1] / sr


def plan_windows(model: DeployedModel, path: str | Path, n: int, window: float | None = None,
                 hop: float | None = None) -> tuple[list[int], int]:
    """(window starts, window length) in samples at the model's rate over `n` samples."""
    params = model.feature_params
    window = model.clip_seconds if window is None else window
    hop = window if hop is None else hop
    n_window, n_hop = params.n_samples(window), max(1, params.n_samples(hop))
    if (n - n_window) / n_hop > MAX_WINDOWS:
        raise ConfigError(f"{path}: --hop {hop:g} s cuts this {n / params.sample_rate:.0f}-s recording into more "
                          f"than {MAX_WINDOWS:,} windows; use a longer hop")
    return window_starts(n, n_window, n_hop, params.hop_length), n_window


BLOCK_FRAMES = 1 << 16  # decoded per read: 1.4 s at 48 kHz


@dataclass
class StreamedRecording:
    """A recording read block by block: soundfile blocks, soxr's streaming resampler (which
    gives the same samples as resampling the whole file), and only the samples of the windows
    still to come kept. Memory is one block plus one window, however long the file."""
    path: Path
    sample_rate: int       # the model's
    channels: int          # the model's
    starts: list[int]      # window starts, samples at the model's rate
    n_window: int
    n_total: int           # samples at the model's rate, as the whole-file path makes them
    seconds: float

    def windows(self) -> Iterator[np.ndarray]:
        """(channels, n_window) float32 windows in start order."""
        try:
            f = sf.SoundFile(str(self.path))
        except Exception as exc:
            raise audio.AudioError(f"{self.path}: cannot read audio ({_first_line(exc)})") from None
        with f:
            resampler = None if f.samplerate == self.sample_rate else soxr.ResampleStream(
                f.samplerate, self.sample_rate, f.channels, dtype="float32", quality="HQ")
            buf, buf_start, k = np.zeros((0, f.channels), np.float32), 0, 0
            blocks = f.blocks(blocksize=BLOCK_FRAMES, dtype="float32", always_2d=True)
            last = False
            while not last:
                block = next(blocks, None)
                last = block is None
                if block is not None:
                    audio.validate(block.T, self.path)
                    y = block if resampler is None else resampler.resample_chunk(block)
                elif resampler is not None:
                    y = resampler.resample_chunk(np.zeros((0, f.channels), np.float32), last=True)
                else:
                    y = buf[:0]
                buf = np.concatenate([buf, y]) if len(buf) else y
                if last:  # exactly the whole-file length: ceil(frames · rate / file rate)
                    buf = audio.fit_length(buf.T, self.n_total - buf_start).T
                while k < len(self.starts) and (last or self.starts[k] + self.n_window <= buf_start + len(buf)):
                    lo = self.starts[k] - buf_start
                    piece = audio.fit_length(np.ascontiguousarray(buf[lo:lo + self.n_window].T), self.n_window)
                    yield audio.select_channels(piece, self.channels, self.path)
                    k += 1
                if k < len(self.starts):  # keep only what the next windows need
                    cut = min(self.starts[k] - buf_start, len(buf))
                    buf, buf_start = buf[cut:], buf_start + cut


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def stream_windows(model: DeployedModel, path: str | Path, window: float | None = None,
                   hop: float | None = None) -> StreamedRecording:
    """Plan the windows of a file from its header (frames, rate) without decoding it."""
    path = Path(path)
    if not path.is_file():
        raise audio.AudioError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        info = sf.info(str(path))
    except Exception as exc:
        raise audio.AudioError(f"{path}: cannot read audio ({_first_line(exc)})") from None
    if info.frames <= 0:
        raise audio.AudioError(f"{path}: the clip has no samples")
    if info.channels > audio.MAX_CHANNELS:
        raise audio.AudioError(f"{path}: {info.channels} channels; edgeasc takes mono or stereo audio")
    sr = model.feature_params.sample_rate
    n_total = info.frames if info.samplerate == sr else math.ceil(info.frames * sr / info.samplerate)
    starts, n_window = plan_windows(model, path, n_total, window, hop)
    return StreamedRecording(path, sr, model.channels, starts, n_window, n_total, n_total / sr)


def model_inputs(model: DeployedModel, path: str | Path, window: float | None = None, hop: float | None = None
                 ) -> tuple[np.ndarray, list[float], float]:
    """The model inputs of every window of one recording: (inputs, window starts in s, duration in s)."""
    x, starts, n_window, seconds = recording_windows(model, path, window, hop)
    params = model.feature_params
    inputs = [_window(model, x, s, n_window) for s in starts]
    return np.stack(inputs).astype(np.float32, copy=False), [s / params.sample_rate for s in starts], seconds


def _window(model: DeployedModel, x: np.ndarray, start: int, n_window: int) -> np.ndarray:
    return model_input(model, audio.fit_length(x[:, start:start + n_window], n_window))


def model_input(model: DeployedModel, piece: np.ndarray) -> np.ndarray:
    """What the graph takes for one window of samples: the samples themselves (a --with-frontend
    model), else the normalised numpy frontend's features."""
    return piece if model.takes_waveform else model.normalize(perceptual_mel(piece, model.feature_params))


def check_windows(model: DeployedModel, window: float | None, hop: float | None) -> None:
    params = model.feature_params
    shortest = (params.n_fft // 2 + 1) / params.sample_rate
    frame = params.hop_length / params.sample_rate  # a finer hop moves no feature frame
    if window is not None and not (math.isfinite(window) and shortest < window <= 3600):
        raise ConfigError(f"--window must be between {shortest:.3f} s and 3600 s, got {window}")
    if hop is not None and not (math.isfinite(hop) and frame <= hop <= (window or model.clip_seconds)):
        raise ConfigError(f"--hop must be between one feature frame ({frame:.4f} s) and the window, got {hop}")


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
    (default: default_batch(model)) (windows
    of consecutive files share batches), so memory holds one decoded recording and one batch,
    whatever the hop. A file that cannot be read, or on which the model outputs a non-finite
    number, yields a Prediction with `error` set."""
    model.require_metadata("predict")
    check_windows(model, window, hop)
    batch_size = default_batch(model, window) if batch_size is None else batch_size
    if not 1 <= batch_size <= 4096:
        raise ConfigError(f"--batch must be between 1 and 4096, got {batch_size}")
    window_s = model.clip_seconds if window is None else window
    waiting: list[tuple[Prediction, list[np.ndarray]]] = []  # in input order, with the logits so far
    batch: list[np.ndarray] = []
    owners: list[list[np.ndarray]] = []

    def run_batch() -> None:
        logits = model.run(np.stack(batch).astype(np.float32, copy=False))
        for rows, row in zip(owners, logits, strict=True):
            rows.append(row)
        batch.clear()
        owners.clear()

    def finished() -> Iterator[Prediction]:
        while waiting and (waiting[0][0].error or len(waiting[0][1]) == len(waiting[0][0].starts)):
            prediction, rows = waiting.pop(0)
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
        waiting.append((prediction, rows))
        try:
            if str(path) == "-":  # stdin is read whole: there is no header to plan from
                x, starts, n_window, prediction.seconds = recording_windows(model, path, window, hop)
                pieces: Iterator[np.ndarray] = (audio.fit_length(x[:, s:s + n_window], n_window) for s in starts)
            else:
                recording = stream_windows(model, path, window, hop)
                starts, prediction.seconds, pieces = recording.starts, recording.seconds, recording.windows()
            prediction.starts = [s / model.feature_params.sample_rate for s in starts]
            for piece in pieces:
                batch.append(model_input(model, piece))
                owners.append(rows)
                if len(batch) == batch_size:
                    run_batch()
                    yield from finished()
        except EdgeascError as exc:  # unreadable, or a bad block mid-file: its windows so far are dropped
            prediction.error = str(exc)
        if progress is not None:
            progress(1)
        yield from finished()
    if batch:
        run_batch()
    yield from finished()
