"""Classify recordings with an exported model, using nothing but what the ONNX file carries.
torch-free: decode + resample (audio.py), the numpy frontend (or the graph's own, for models
exported --with-frontend), normalisation from the metadata, onnxruntime.

Files, and a WAV stream on stdin, are read block by block (memory: one block and one window,
whatever the length; the samples equal the whole-file path's exactly at the model's rate). Recordings longer than the window are
classified in sliding windows (default: the model's
clip length, no overlap); what the hops leave at the end gets one more window aligned to the
end of the recording (so no window is padded), unless it is shorter than one STFT hop. The file's result is the mean of its windows' class probabilities. A
recording shorter than the window is zero-padded, as the training clips were.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from edgeasc.errors import ConfigError, EdgeascError
from edgeasc.runtime import audio
from edgeasc.runtime import stream as streaming
from edgeasc.runtime.audio import AUDIO_SUFFIXES, AudioError
from edgeasc.runtime.deployed import DeployedModel
from edgeasc.runtime.inputs import model_input, softmax


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


MAX_WINDOWS = 100_000  # per recording: a 10-s hop over a day, or one frame's hop over 40 minutes


def recording_windows(model: DeployedModel, path: str | Path, window: float | None = None,
                      hop: float | None = None) -> tuple[np.ndarray, list[int], int, float]:
    """A recording decoded whole at the model's rate, its window starts (samples), the window
    length (samples) and the duration (s). `predict` streams files (stream_windows) and stdin
    (PipedRecording) instead; this whole-file path is the reference they are tested against."""
    x, sr = audio.load(path, sample_rate=model.feature_params.sample_rate, channels=model.channels)
    starts, n_window = plan_windows(model, path, x.shape[-1], window, hop)
    return x, starts, n_window, x.shape[-1] / sr


def plan_windows(model: DeployedModel, path: str | Path, n: int, window: float | None = None,
                 hop: float | None = None) -> tuple[list[int], int]:
    """(window starts, window length) in samples at the model's rate over `n` samples."""
    params = model.feature_params
    n_window, n_hop = window_lengths(model, window, hop)
    if too_many_windows(n, n_window, n_hop):
        hop = (model.clip_seconds if window is None else window) if hop is None else hop
        raise ConfigError(f"{path}: --hop {hop:g} s cuts this {n / params.sample_rate:.0f}-s recording into more "
                          f"than {MAX_WINDOWS:,} windows; use a longer hop")
    return window_starts(n, n_window, n_hop, params.hop_length), n_window


def window_lengths(model: DeployedModel, window: float | None = None, hop: float | None = None) -> tuple[int, int]:
    """(window, hop) in samples at the model's rate."""
    params = model.feature_params
    window = model.clip_seconds if window is None else window
    hop = window if hop is None else hop
    return params.n_samples(window), max(1, params.n_samples(hop))


def too_many_windows(n: int, n_window: int, n_hop: int) -> bool:
    return (n - n_window) / n_hop > MAX_WINDOWS


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


class _Tap:
    """A stream that remembers the last 8 bytes read from it: once stream.read_wav_header has
    stopped at the audio, they are the data chunk's header, whose declared size it does not
    return (a second WAV parser is not wanted; the declared size is)."""

    def __init__(self, stream: BinaryIO):
        self.stream, self.last = stream, b""

    def read(self, n: int) -> bytes:
        data = self.stream.read(n)
        self.last = (self.last + data)[-8:]
        return data


class _Limited:
    """At most `left` bytes of a stream: a WAV's declared data size, so that chunks after the
    audio (LIST, id3) are not decoded as samples, as soundfile does not decode them either."""

    def __init__(self, stream: BinaryIO, left: int):
        self.stream, self.left = stream, left

    def read(self, n: int) -> bytes:
        data = self.stream.read(min(n, self.left)) if self.left > 0 else b""
        self.left -= len(data)
        return data


@dataclass
class PipedRecording:
    """One WAV recording read from a pipe (`predict -`), block by block with the parser and
    streaming resampler of `listen`, its windows cut as they complete. The length, and so the
    last, end-aligned window, is only known at the end of the stream; so the samples kept are
    those from the next hop's window on, and at least the last window's worth (the end-aligned
    window is within them): memory is one block plus one window, whatever the length. The
    windows, their starts and `seconds` are the whole-file path's (recording_windows) on the
    same bytes."""
    model: DeployedModel
    stream: BinaryIO
    window: float | None = None
    hop: float | None = None
    name: str = "stdin"
    starts: list[int] = field(default_factory=list)  # grows as windows are cut
    n_total: int = 0                                  # samples at the model's rate, once read
    seconds: float = 0.0

    def windows(self) -> Iterator[np.ndarray]:
        """(channels, n_window) float32 windows in start order; `starts` holds the start of each
        one yielded, and `seconds` is set once the stream has ended."""
        sr, channels = self.model.feature_params.sample_rate, self.model.channels
        n_window, n_hop = window_lengths(self.model, self.window, self.hop)
        tap = _Tap(self.stream)
        fmt, body = streaming.open_stream(tap, None, self.name)
        declared = int.from_bytes(tap.last[4:8], "little")
        if 0 < declared < 0xFFFFFFFF:  # 0 and 0xFFFFFFFF: a stream written live, of unknown length
            body = _Limited(body, declared)
        resampler = None if fmt.rate == sr else soxr.ResampleStream(fmt.rate, sr, fmt.channels,
                                                                    dtype="float32", quality="HQ")
        buf = np.zeros((channels, 0), np.float32)
        buf_start, frames, produced, overflow = 0, 0, 0, False
        blocks = streaming.read_blocks(body, fmt, BLOCK_FRAMES)
        last = False
        while not last:
            try:
                block = next(blocks, None)
            except AudioError as exc:  # the stream's decoder does not name the stream
                raise AudioError(f"{self.name}: {exc}") from None
            last = block is None
            if block is not None:
                frames += block.shape[-1]
                # resampled on the file's channels, then mixed: the order the whole-file path takes
                y = block.T if resampler is None else resampler.resample_chunk(np.ascontiguousarray(block.T))
            elif resampler is not None and frames:
                y = resampler.resample_chunk(np.zeros((0, fmt.channels), np.float32), last=True)
            else:
                y = np.zeros((0, fmt.channels), np.float32)
            y = audio.select_channels(np.ascontiguousarray(y.T), channels, self.name)
            buf = np.concatenate([buf, y], axis=1) if buf.shape[-1] else y
            produced += y.shape[-1]
            if last:
                if frames == 0:
                    raise AudioError(f"{self.name}: the clip has no samples")
                # exactly the whole-file length: ceil(frames · rate / stream rate)
                self.n_total = frames if resampler is None else math.ceil(frames * sr / fmt.rate)
                buf = audio.fit_length(buf, self.n_total - buf_start)
                self.seconds = self.n_total / sr
                # raises on too many windows, with the whole-file path's message
                final, _ = plan_windows(self.model, "-", self.n_total, self.window, self.hop)
                if final[:len(self.starts)] != self.starts or any(s < buf_start for s in final[len(self.starts):]):
                    raise EdgeascError(f"{self.name}: internal error: streamed windows do not match the plan")
                for start in final[len(self.starts):]:
                    self.starts.append(start)
                    yield audio.fit_length(buf[:, start - buf_start:start - buf_start + n_window], n_window)
                return
            # the windows of the hop grid complete before the end is known: each one is in any plan
            # that is at least as long (window_starts keeps every grid start s with s + window <= n)
            while not overflow:
                start = len(self.starts) * n_hop
                if start + n_window > produced:
                    break
                if too_many_windows(start + n_window, n_window, n_hop):
                    overflow = True  # read on to the end for the length the refusal names
                    break
                self.starts.append(start)
                yield np.ascontiguousarray(buf[:, start - buf_start:start - buf_start + n_window])
            # keep the next grid window's samples and the last window's (it may end the recording)
            keep = max(buf_start, min(len(self.starts) * n_hop, produced - n_window))
            if overflow:
                keep = max(buf_start, produced - n_window)
            buf, buf_start = buf[:, keep - buf_start:], keep


def model_inputs(model: DeployedModel, path: str | Path, window: float | None = None, hop: float | None = None
                 ) -> tuple[np.ndarray, list[float], float]:
    """The model inputs of every window of one recording: (inputs, window starts in s, duration in s)."""
    x, starts, n_window, seconds = recording_windows(model, path, window, hop)
    params = model.feature_params
    inputs = [_window(model, x, s, n_window) for s in starts]
    return np.stack(inputs).astype(np.float32, copy=False), [s / params.sample_rate for s in starts], seconds


def _window(model: DeployedModel, x: np.ndarray, start: int, n_window: int) -> np.ndarray:
    return model_input(model, audio.fit_length(x[:, start:start + n_window], n_window))


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
