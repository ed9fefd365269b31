"""Live classification of an unbounded audio stream (`edgeasc listen`). torch-free.

A stream is read in blocks (a WAV stream such as `arecord ... -t wav` writes, or raw PCM
of a stated rate, channel count and sample format), resampled to the model's rate by its
frontend's streaming resampler (soxr, or torchaudio's sinc filter), and classified in windows
of the model's clip length every hop. Memory
is bounded whatever the stream's length: one block, the resampler's state and at most one
window plus one block of samples are held.
"""

from __future__ import annotations

import struct
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from edgeasc.errors import ConfigError
from edgeasc.runtime.audio import AudioError, select_channels, stream_resampler
from edgeasc.runtime.deployed import DeployedModel
from edgeasc.runtime.framecache import SharedFrames, shares_frames
from edgeasc.runtime.inputs import model_input, softmax

BLOCK_SECONDS = 0.1
RAW_FORMATS = {"S16_LE": ("<i2", 32768.0), "S32_LE": ("<i4", 2147483648.0), "F32_LE": ("<f4", 1.0)}
_WAV_INTEGER = {16: ("<i2", 32768.0), 32: ("<i4", 2147483648.0)}


@dataclass(frozen=True)
class StreamFormat:
    rate: int
    channels: int
    dtype: str        # numpy dtype of one sample, or "s24" (packed 24-bit little-endian)
    scale: float      # full scale of that type

    @property
    def frame_bytes(self) -> int:
        return self.channels * (3 if self.dtype == "s24" else np.dtype(self.dtype).itemsize)


def raw_format(rate: int | None, channels: int | None, fmt: str) -> StreamFormat:
    if rate is None:  # --channels or --format alone: a raw stream has no header to read the rate from
        raise ConfigError("raw PCM needs --rate, the stream's sample rate in Hz (e.g. --rate 48000); "
                          "a WAV stream carries its own")
    if not 1000 <= rate <= 384_000:
        raise ConfigError(f"--rate {rate} is not a sample rate edgeasc reads: give the stream's rate in Hz, "
                          "1000 to 384000 (e.g. 16000, 44100, 48000)")
    if channels is None:
        raise ConfigError("raw PCM needs --channels 1 or 2 (a raw stream does not say how many it interleaves)")
    if channels not in (1, 2):
        raise ConfigError(f"--channels must be 1 or 2, got {channels}")
    if fmt not in RAW_FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(RAW_FORMATS)}, got {fmt!r}")
    dtype, scale = RAW_FORMATS[fmt]
    return StreamFormat(rate, channels, dtype, scale)


def _read_exactly(stream: BinaryIO, n: int) -> bytes:
    parts, have = [], 0
    while have < n:
        part = stream.read(n - have)
        if not part:
            break
        parts.append(part)
        have += len(part)
    return b"".join(parts)


def read_wav_header(stream: BinaryIO, name: str = "stdin") -> StreamFormat:
    """Parse a RIFF/WAVE header from a non-seekable stream, stopping at the start of the data.
    Streams written live declare an unknown length (0 or 0xFFFFFFFF); it is not trusted."""
    head = _read_exactly(stream, 12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise AudioError(f"{name}: not a WAV stream (no RIFF/WAVE header); for raw PCM give --rate, --channels "
                         "and --format")
    fmt = None
    for _ in range(64):  # chunks before "data": fmt, LIST, fact...
        chunk = _read_exactly(stream, 8)
        if len(chunk) < 8:
            raise AudioError(f"{name}: the WAV stream ended before its audio data")
        kind, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if kind == b"data":
            if fmt is None:
                raise AudioError(f"{name}: the WAV stream has no fmt chunk before its data")
            return fmt
        if size > 1 << 20:
            raise AudioError(f"{name}: a {size:,}-byte {kind!r} chunk before the audio; not a WAV stream edgeasc reads")
        body = _read_exactly(stream, size + (size & 1))
        if kind == b"fmt ":
            fmt = _parse_fmt(body[:size], name)  # an odd chunk's pad byte is not part of it
    raise AudioError(f"{name}: no data chunk among the first 64 chunks; not a WAV stream edgeasc reads")


def _parse_fmt(body: bytes, name: str) -> StreamFormat:
    if len(body) < 16:
        raise AudioError(f"{name}: a truncated WAV fmt chunk")
    tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
    if tag == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the sub-format's first two bytes
        tag = struct.unpack("<H", body[24:26])[0]
    if channels not in (1, 2):
        raise AudioError(f"{name}: {channels} channels; edgeasc takes mono or stereo audio")
    if not 1000 <= rate <= 384_000:
        raise AudioError(f"{name}: a sample rate of {rate} Hz")
    if tag == 1 and bits in _WAV_INTEGER:
        return StreamFormat(rate, channels, *_WAV_INTEGER[bits])
    if tag == 1 and bits == 24:
        return StreamFormat(rate, channels, "s24", 8388608.0)
    if tag == 3 and bits == 32:
        return StreamFormat(rate, channels, "<f4", 1.0)
    raise AudioError(f"{name}: WAV format {tag} with {bits}-bit samples; edgeasc listens to 16/24/32-bit PCM "
                     "or 32-bit float")


def read_blocks(stream: BinaryIO, fmt: StreamFormat, block_frames: int) -> Iterator[np.ndarray]:
    """(channels, frames) float32 blocks until the stream ends; a last partial frame is dropped."""
    n_bytes = block_frames * fmt.frame_bytes
    while True:
        data = _read_exactly(stream, n_bytes)
        usable = len(data) - len(data) % fmt.frame_bytes
        if usable == 0:
            return
        yield _decode(data[:usable], fmt)
        if len(data) < n_bytes:
            return


def _decode(data: bytes, fmt: StreamFormat) -> np.ndarray:
    if fmt.dtype == "s24":
        b = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        samples = (b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8  # sign-extend
    else:
        samples = np.frombuffer(data, dtype=fmt.dtype)
    x = (samples.astype(np.float32) / np.float32(fmt.scale)).reshape(-1, fmt.channels).T
    if not np.isfinite(x).all():
        raise AudioError("the stream holds NaN or infinite samples")
    return x


@dataclass
class Window:
    index: int
    start: float                       # stream time of the window's first sample, seconds
    probabilities: np.ndarray | None   # this window's class probabilities; None: silent, not classified
    smoothed: np.ndarray | None        # mean over the last `smooth` classified windows (this one included)
    latency_ms: float                  # level + frontend + network for this window
    level_db: float                    # RMS level in dBFS (full scale 1.0: a full-scale sine is -3.0 dB)

    @property
    def silent(self) -> bool:
        return self.probabilities is None


SILENCE_FLOOR_DB = -200.0  # the level of digital zero


def level_db(x: np.ndarray) -> float:
    """RMS level of all channels in dBFS: 20·log10(RMS), full scale 1.0."""
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0
    return max(SILENCE_FLOOR_DB, 20 * np.log10(rms)) if rms > 0 else SILENCE_FLOOR_DB


def check_silence_db(silence_db: float | None) -> None:
    if silence_db is not None and not SILENCE_FLOOR_DB < silence_db <= 0:
        raise ConfigError(f"--silence-db must be a level in dBFS between {SILENCE_FLOOR_DB:g} and 0, "
                          f"got {silence_db}")


class StreamClassifier:
    """Windows of `window` seconds every `hop` seconds over samples pushed at the model's rate.

    When the hop is a whole number of STFT hops and shorter than the window, overlapping windows
    share their interior STFT frames (runtime/framecache.py): each is transformed once, not once
    per window. Otherwise (e.g. a 1-s or 0.25-s hop at 22,050 Hz with hop_length 512), a
    waveform-in model, or shared_frames=False, every window's features are computed from its
    samples alone (`model_input`); both give the same numbers to float32 rounding."""

    def __init__(self, model: DeployedModel, window: float | None = None, hop: float = 1.0, smooth: int = 1,
                 silence_db: float | None = None, shared_frames: bool = True):
        model.require_metadata("listen")
        check_silence_db(silence_db)
        self.silence_db = silence_db
        if smooth < 1 or smooth > 10_000:
            raise ConfigError(f"--smooth must be between 1 and 10000 windows, got {smooth}")
        params = model.feature_params
        self.model = model
        self.window_seconds = model.clip_seconds if window is None else window
        frame = params.hop_length / params.sample_rate
        if not (np.isfinite(self.window_seconds) and (params.n_fft // 2 + 1) / params.sample_rate
                < self.window_seconds <= 600):
            raise ConfigError(f"--window must be at most 600 s and longer than one FFT, got {self.window_seconds}")
        if not (np.isfinite(hop) and frame <= hop <= self.window_seconds):
            raise ConfigError(f"--hop must be between one feature frame ({frame:.4f} s) and the window "
                              f"({self.window_seconds:g} s), got {hop}")
        self.n_window = params.n_samples(self.window_seconds)
        self.n_hop = max(1, params.n_samples(hop))
        self.frames = (SharedFrames(params, self.n_window, self.n_hop) if shared_frames and not model.takes_waveform
                       and shares_frames(params, self.n_window, self.n_hop) else None)
        self.buffer = np.zeros((model.channels, 0), dtype=np.float32)
        self.consumed = 0            # stream samples before the buffer's first one
        self.recent: deque[np.ndarray] = deque(maxlen=smooth)
        self.count = 0
        self.samples = 0

    def push(self, x: np.ndarray) -> list[Window]:
        """Add (channels, n) samples at the model's rate; returns the windows they complete."""
        self.samples += x.shape[-1]
        self.buffer = np.concatenate([self.buffer, x], axis=1) if self.buffer.size else x
        done = []
        while self.buffer.shape[-1] >= self.n_window:
            done.append(self._classify(self.buffer[:, :self.n_window], shared=True))
            self.buffer = self.buffer[:, self.n_hop:]  # the hop is at most the window
            self.consumed += self.n_hop
        return done

    def finish(self) -> list[Window]:
        """At the end of the stream: a stream shorter than one window still gets one (zero-padded)."""
        if self.count == 0 and self.samples > 0:
            pad = np.zeros((self.buffer.shape[0], self.n_window - self.buffer.shape[-1]), dtype=np.float32)
            return [self._classify(np.concatenate([self.buffer, pad], axis=1))]
        return []

    def _classify(self, piece: np.ndarray, shared: bool = False) -> Window:
        t0 = time.perf_counter()
        m = self.model
        start = self.consumed / m.feature_params.sample_rate
        level = level_db(piece)
        if self.silence_db is not None and level < self.silence_db:  # no frontend, no model call
            self.count += 1
            return Window(self.count - 1, start, None, None, 1000 * (time.perf_counter() - t0), level)
        if shared and self.frames is not None:  # the zero-padded short stream of finish(): not on the grid
            x = m.normalize(self.frames.features(piece, self.consumed))
        else:
            x = model_input(m, piece)
        logits = np.asarray(m.run(x[None].astype(np.float32, copy=False))[0], dtype=np.float64)
        if not np.isfinite(logits).all():
            raise AudioError(f"{m.path}: the model output a non-finite value (NaN or inf) at {start:.2f} s")
        p = softmax(logits)
        self.recent.append(p)
        window = Window(self.count, start, p, np.mean(self.recent, axis=0), 1000 * (time.perf_counter() - t0), level)
        self.count += 1
        return window


class _Prefixed:
    """A stream with bytes already read put back in front (a pipe cannot seek)."""

    def __init__(self, prefix: bytes, stream: BinaryIO):
        self.prefix, self.stream = prefix, stream

    def read(self, n: int) -> bytes:
        if self.prefix:
            head, self.prefix = self.prefix[:n], self.prefix[n:]
            return head
        return self.stream.read(n)


def open_stream(stream: BinaryIO, raw: StreamFormat | None, name: str = "stdin") -> tuple[StreamFormat, BinaryIO]:
    """The stream's format: its WAV header when it has one (checked against --rate/--channels
    when those are given too), else the raw PCM format given."""
    head = _read_exactly(stream, 4)
    body = _Prefixed(head, stream)
    if head != b"RIFF":
        if raw is None:
            return read_wav_header(body, name), body  # raises: not a WAV stream
        return raw, body
    fmt = read_wav_header(body, name)
    if raw is not None and (raw.rate, raw.channels) != (fmt.rate, fmt.channels):
        raise AudioError(f"{name}: the WAV stream is {fmt.rate} Hz with {fmt.channels} channel(s), but --rate/"
                         f"--channels say {raw.rate} Hz with {raw.channels}")
    return fmt, body


def listen(model: DeployedModel, stream: BinaryIO, raw: StreamFormat | None = None, window: float | None = None,
           hop: float = 1.0, smooth: int = 1, name: str = "stdin", header: bool = True,
           silence_db: float | None = None, shared_frames: bool = True) -> Iterator[Window]:
    """Classify a byte stream (WAV, or raw PCM of format `raw`) window by window. header=False:
    the stream is raw PCM of format `raw` and is not probed for a WAV header (a microphone).
    silence_db: windows quieter than this (dBFS RMS) are not classified (Window.silent).
    shared_frames=False: recompute every window's STFT (StreamClassifier), for comparisons."""
    classifier = StreamClassifier(model, window, hop, smooth, silence_db, shared_frames)
    if header or raw is None:
        fmt, stream = open_stream(stream, raw, name)
    else:
        fmt = raw
    rate = model.feature_params.sample_rate
    resampler = None if fmt.rate == rate else stream_resampler(fmt.rate, rate, model.channels,
                                                               model.feature_params.resampler)
    for block in read_blocks(stream, fmt, max(1, int(fmt.rate * BLOCK_SECONDS))):
        x = select_channels(block, model.channels, name)
        if resampler is not None:
            x = np.ascontiguousarray(resampler.resample_chunk(np.ascontiguousarray(x.T)).T)
        yield from classifier.push(x)
    if resampler is not None:
        tail = resampler.resample_chunk(np.zeros((0, model.channels), dtype=np.float32), last=True)
        if len(tail):
            yield from classifier.push(np.ascontiguousarray(tail.T))
    yield from classifier.finish()
