"""A microphone as the byte stream `listen` reads: PortAudio through sounddevice (the `mic`
extra: `pip install ".[mic]"` from a checkout, plus the system's PortAudio, `apt install
libportaudio2`). torch-free.

The microphone is opened as a raw float32 input stream at its own rate (or --rate) and read
in blocks; `listen` resamples and windows it exactly as it does a pipe. Memory stays bounded:
PortAudio's ring buffer holds what is not yet read, and a reader too slow for the stream loses
samples (PortAudio reports an overflow; they are counted and reported), it never queues them.
"""

from __future__ import annotations

from edgeasc.errors import ConfigError
from edgeasc.runtime.audio import AudioError
from edgeasc.runtime.stream import StreamFormat

INSTALL = ("install the mic extra (pip install sounddevice, or '.[mic]' from a checkout) and the system's PortAudio "
           "(Debian/Raspberry Pi OS: apt install libportaudio2)")


def _sounddevice():
    try:
        import sounddevice
    except ImportError:
        raise ConfigError(f"reading a microphone needs sounddevice: {INSTALL}; or pipe audio in: "
                          "arecord -f S16_LE -r 44100 -c 2 -t wav | edgeasc listen MODEL -") from None
    except OSError as exc:  # sounddevice is there, the PortAudio library is not
        raise ConfigError(f"sounddevice cannot load PortAudio ({exc}): {INSTALL}") from None
    return sounddevice


def _device(text: str | None):
    """A device index ("2") or a name (or part of one), as PortAudio selects them."""
    if text is None:
        return None
    return int(text) if text.strip().isdigit() else text


class Microphone:
    """A readable byte stream of float32 frames from an input device."""

    def __init__(self, device: str | None = None, rate: int | None = None, channels: int | None = None,
                 block_seconds: float = 0.1):
        sd = self.sd = _sounddevice()
        dev = _device(device)
        label = "the default microphone" if device is None else f"microphone {device!r}"
        try:
            info = sd.query_devices(dev, "input")
        except (ValueError, sd.PortAudioError) as exc:
            raise AudioError(f"{label}: no such input device ({str(exc).strip() or type(exc).__name__}); "
                             "`python -m sounddevice` lists them") from None
        available = int(info.get("max_input_channels", 0))
        if available < 1:
            raise AudioError(f"{label} ({info.get('name')}) has no input channels")
        if channels is not None and channels > available:
            raise AudioError(f"{label} ({info.get('name')}) has {available} input channel(s), --channels {channels}")
        channels = channels or min(2, available)
        rate = int(rate or round(float(info.get("default_samplerate") or 48000)))
        self.name = f"{info.get('name', label)}"
        self.format = StreamFormat(rate, channels, "<f4", 1.0)
        self.overflows = 0
        try:
            self.stream = sd.RawInputStream(samplerate=rate, channels=channels, dtype="float32", device=dev,
                                            blocksize=max(1, int(rate * block_seconds)))
            self.stream.start()
        except sd.PortAudioError as exc:
            raise AudioError(f"cannot open {label} ({self.name}) at {rate} Hz with {channels} channel(s): "
                             f"{str(exc).strip() or 'PortAudio error'} (busy, or another rate: try --rate)") from None

    def read(self, n: int) -> bytes:
        frames = max(1, n // self.format.frame_bytes)
        try:
            data, overflowed = self.stream.read(frames)
        except self.sd.PortAudioError as exc:
            raise AudioError(f"{self.name}: the microphone stopped ({str(exc).strip()})") from None
        self.overflows += bool(overflowed)
        return bytes(data)

    def close(self) -> None:
        try:
            self.stream.stop()
            self.stream.close()
        except self.sd.PortAudioError:
            pass
