"""Recordings read for `predict`: a file decoded block by block (StreamedRecording), a WAV
stream on stdin (PipedRecording) and the whole-file reference both are tested against
(recording_windows). Memory is one block plus one window, whatever the length; the samples
equal the whole-file path's exactly at the model's rate. torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from edgeasc.errors import EdgeascError
from edgeasc.runtime import audio
from edgeasc.runtime import stream as streaming
from edgeasc.runtime.audio import AudioError
from edgeasc.runtime.deployed import DeployedModel
from edgeasc.runtime.windows import plan_windows, too_many_windows, window_lengths


def recording_windows(model: DeployedModel, path: str | Path, window: float | None = None,
                      hop: float | None = None) -> tuple[np.ndarray, list[int], int, float]:
    """A recording decoded whole at the model's rate, its window starts (samples), the window
    length (samples) and the duration (s). `predict` streams files (stream_windows) and stdin
    (PipedRecording) instead; this whole-file path is the reference they are tested against."""
    x, sr = audio.load(path, sample_rate=model.feature_params.sample_rate, channels=model.channels,
                       resampler=model.feature_params.resampler)
    starts, n_window = plan_windows(model, path, x.shape[-1], window, hop)
    return x, starts, n_window, x.shape[-1] / sr


BLOCK_FRAMES = 1 << 16  # decoded per read: 1.4 s at 48 kHz


@dataclass
class StreamedRecording:
    """A recording read block by block: soundfile blocks, the frontend's streaming resampler
    (soxr or sinc: the same samples as resampling the whole file), and only the samples of the
    windows still to come kept. Memory is one block plus one window, however long the file."""
    path: Path
    sample_rate: int       # the model's
    channels: int          # the model's
    starts: list[int]      # window starts, samples at the model's rate
    n_window: int
    n_total: int           # samples at the model's rate, as the whole-file path makes them
    seconds: float
    resampler: str = "soxr"  # the frontend's (FeatureParams.resampler)

    def windows(self) -> Iterator[np.ndarray]:
        """(channels, n_window) float32 windows in start order."""
        try:
            f = sf.SoundFile(str(self.path))
        except Exception as exc:
            raise audio.AudioError(f"{self.path}: cannot read audio ({_first_line(exc)})") from None
        with f:
            resampler = None if f.samplerate == self.sample_rate else audio.stream_resampler(
                f.samplerate, self.sample_rate, f.channels, self.resampler)
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
    return StreamedRecording(path, sr, model.channels, starts, n_window, n_total, n_total / sr,
                             model.feature_params.resampler)


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
        resampler = None if fmt.rate == sr else audio.stream_resampler(fmt.rate, sr, fmt.channels,
                                                                       self.model.feature_params.resampler)
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
