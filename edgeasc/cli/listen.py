"""`edgeasc listen`: classify a live stream, window by window or as scene changes (--events).
torch-free: it parses, calls edgeasc.runtime.stream (and runtime.events, runtime.stats), and renders."""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path

import typer

from edgeasc.console import err, safe
from edgeasc.errors import ConfigError
from edgeasc.runtime.events import DEFAULT_HOLD, DEFAULT_THRESHOLD


class _Terminated(Exception):
    """SIGTERM (systemd stopping the service, `kill`): ends listening like Ctrl-C does."""


def _on_sigterm(signum, frame):  # noqa: ARG001
    raise _Terminated


def listen(
    model: Path = typer.Argument(..., help="An .onnx file written by `edgeasc export`."),
    source: str | None = typer.Argument(None, help="'-': a WAV stream on stdin (arecord -t wav ... | edgeasc listen "
                                        "M -), or raw PCM with --rate/--channels/--format; or a path (a FIFO, a file). "
                                        "None: the microphone (the `mic` extra)."),
    mic: str | None = typer.Option(None, help="Microphone: a device index or (part of) a name (default: the "
                                   "system's default input; `python -m sounddevice` lists them)."),
    rate: int | None = typer.Option(None, help="Raw PCM: sample rate in Hz (without it the stream must be WAV). "
                                    "Microphone: the rate to open it at (default: its own)."),
    channels: int | None = typer.Option(None, help="Raw PCM: 1 or 2 channels. Microphone: default up to 2."),
    fmt: str = typer.Option("S16_LE", "--format", help="Raw PCM sample format: S16_LE, S32_LE or F32_LE."),
    window: float | None = typer.Option(None, help="Window seconds (default: the model's clip length)."),
    hop: float = typer.Option(1.0, help="Seconds between windows."),
    smooth: int = typer.Option(1, help="Report the mean probabilities of the last N windows."),
    events: bool = typer.Option(False, "--events", help="Report scene changes only: a label becomes the scene "
                                "after --hold consecutive windows on top with probability >= --threshold."),
    threshold: float | None = typer.Option(None, help="--events: the top probability a window needs to count "
                                    "towards a new scene (default 0.5: more than all other labels together)."),
    hold: int | None = typer.Option(None, help="--events: consecutive windows a new scene needs (default 3; at a 1-s hop: "
                             "sounds shorter than 3 s do not change the scene)."),
    silence_db: float | None = typer.Option(None, "--silence-db", help="Windows quieter than this RMS level in "
                                            "dBFS (e.g. -60) are not classified: reported as silence."),
    mqtt: str | None = typer.Option(None, "--mqtt", help="--events: also publish to an MQTT broker, "
                                    "mqtt://host:port/topic (mqtts:// for TLS): topic/events (QoS 1) and the retained "
                                    "topic/state. Credentials: EDGEASC_MQTT_USERNAME, EDGEASC_MQTT_PASSWORD or "
                                    "EDGEASC_MQTT_PASSWORD_FILE (the `mqtt` extra)."),
    threads: int = typer.Option(1, help="onnxruntime intra-op threads."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per window (with --events: per scene "
                                 "change, then a summary) (JSON lines)."),
) -> None:
    """Classify a live stream, window by window, torch-free; Ctrl-C, SIGTERM or the end of the stream stops."""
    from edgeasc.runtime.deployed import load_model
    from edgeasc.runtime.events import SILENCE, SceneTracker, check_event_options
    from edgeasc.runtime.stats import WindowStats
    from edgeasc.runtime.stream import check_silence_db, raw_format
    from edgeasc.runtime.stream import listen as listen_stream

    if source is not None and mic is not None:
        raise ConfigError("--mic reads a microphone: give it or a SOURCE, not both")
    if source is None and fmt != "S16_LE":
        raise ConfigError("--format describes raw PCM on stdin or a FIFO; a microphone is read as float32")
    if source is None and channels is not None and channels not in (1, 2):
        raise ConfigError(f"--channels must be 1 or 2, got {channels}")
    idle = [flag for flag, value in (("--threshold", threshold), ("--hold", hold)) if value is not None]
    if idle and not events:
        raise ConfigError(f"{idle[0]} does nothing without --events (it decides when the scene changes)")
    threshold = DEFAULT_THRESHOLD if threshold is None else threshold
    hold = DEFAULT_HOLD if hold is None else hold
    check_event_options(threshold, hold)
    check_silence_db(silence_db)
    target = None
    if mqtt is not None:
        from edgeasc.runtime.mqtt import parse_mqtt_url

        if not events:
            raise ConfigError("--mqtt publishes scene changes: add --events")
        target = parse_mqtt_url(mqtt)
    raw = source is not None and (rate is not None or channels is not None or fmt != "S16_LE")
    fmt_spec = raw_format(rate, channels, fmt) if raw else None
    m = load_model(model, threads)
    m.require_metadata("listen")
    if silence_db is not None and SILENCE in m.labels:
        raise ConfigError(f"{model}: the model has a label {SILENCE!r}; --silence-db would report the same name")
    name = "stdin" if source == "-" else source
    if source not in (None, "-") and not Path(source).exists():
        raise ConfigError(f"{source}: no such file or FIFO")
    if source not in (None, "-") and Path(source).is_dir():
        raise ConfigError(f"{source}: a folder; `edgeasc predict` classifies folders")
    publisher = None
    if target is not None:
        from edgeasc.runtime.mqtt import Publisher

        publisher = Publisher(target)
    live = not as_json and not events and sys.stdout.isatty()
    stats = WindowStats()  # constant memory: the stream may run for months
    tracker = SceneTracker(threshold, hold) if events else None
    last_end = 0.0

    def emit(w) -> None:
        nonlocal last_end
        last_end = w.start + (window or m.clip_seconds)
        best = None if w.silent else int(w.smoothed.argmax())
        label = SILENCE if best is None else m.labels[best]
        stats.add(None if best is None else label, w.latency_ms)
        if tracker is not None:
            event = tracker.update(w.start, label, None if best is None else float(w.smoothed[best]))
            if event is not None:
                # the wall-clock time it was decided: "changed at 14:02" for home automation (the
                # stream time restarts at 0 with every start of the service)
                event = dataclasses.replace(event, at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
                render_event(event, as_json)
                if publisher is not None:
                    publisher.event(event)
            return
        if as_json:
            line = {"time": round(w.start, 3), "end": round(last_end, 3), "label": label,
                    "probability": None if best is None else float(w.smoothed[best]),
                    "probabilities": None if best is None else
                    {lab: float(v) for lab, v in zip(m.labels, w.smoothed, strict=True)},
                    "window_label": None if best is None else m.labels[int(w.probabilities.argmax())],
                    "window_probabilities": None if best is None else [float(v) for v in w.probabilities],
                    "level_db": round(w.level_db, 2), "latency_ms": round(w.latency_ms, 3)}
            sys.stdout.write(json.dumps(line) + "\n")
        else:
            share = f"{w.level_db:6.1f} dB" if best is None else f"{100 * w.smoothed[best]:5.1f} %"
            text = f"{w.start:9.1f} s  {safe(label):<20} {share}   {w.latency_ms:6.1f} ms"
            sys.stdout.write(("\r" + text + "\x1b[K") if live else text + "\n")  # K: clear the line's rest
        sys.stdout.flush()

    microphone = None
    if source is None:
        from edgeasc.runtime.microphone import Microphone

        microphone = Microphone(mic, rate, channels)
        stream, fmt_spec, name = microphone, microphone.format, microphone.name
        err.print(f"edgeasc: listening to {name} ({fmt_spec.rate} Hz, {fmt_spec.channels} channel(s)); Ctrl-C stops",
                  markup=False, soft_wrap=True)
    else:
        stream = sys.stdin.buffer if source == "-" else open(source, "rb")  # noqa: SIM115 (closed below)
    stopped = "end of stream"
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        for w in listen_stream(m, stream, fmt_spec, window, hop, smooth, name, header=microphone is None,
                               silence_db=silence_db):
            emit(w)
    except KeyboardInterrupt:
        stopped = "stopped"
    except _Terminated:
        stopped = "terminated"
    finally:
        signal.signal(signal.SIGTERM, previous)
        if stream is not sys.stdin.buffer:
            stream.close()
        if live:
            sys.stdout.write("\n")
    if microphone is not None and microphone.overflows:
        stopped += f" ({microphone.overflows} input overflow(s): samples were lost while classifying)"
    scenes = tracker.time_per_scene(last_end) if tracker is not None else None
    delivered = publisher.close() if publisher is not None else None
    median = stats.latency_ms.quantile(0.5)
    if tracker is not None and as_json:
        print_line({"event": "summary", "stopped": stopped.split(" (")[0], "windows": stats.windows,
                    "silent_windows": stats.silent, "seconds": round(last_end, 3),
                    "scene_seconds": {k: round(v, 3) for k, v in scenes.items()},
                    "median_latency_ms": None if median is None else round(median, 3),
                    **({"mqtt": {"sent": publisher.sent, "dropped": publisher.dropped, "delivered": delivered}}
                       if publisher is not None else {})})
    common = ", ".join(f"{lab} {n}" for lab, n in stats.most_common(3))
    text = f"edgeasc: {stopped}: {stats.windows} windows over {last_end:.1f} s of {name}"
    text += f" ({common})" if common and tracker is None else ""
    text += f"; scenes: {', '.join(f'{k} {v:.1f} s' for k, v in scenes.items())}" if scenes else ""
    text += f"; {stats.silent} silent, not classified" if silence_db is not None else ""
    text += f"; median latency {median:.1f} ms per window" if median is not None else ""
    if publisher is not None:
        text += (f"; MQTT {target.host}:{target.port}: {publisher.sent} message(s) sent, {publisher.dropped} dropped"
                 + ("" if delivered else ", not all delivered (broker unreachable?)"))
    err.print(text, markup=False, soft_wrap=True)


def print_line(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def render_event(event, as_json: bool) -> None:
    if as_json:
        print_line(event.to_dict())
        return
    share = "" if event.probability is None else f"{100 * event.probability:5.1f} %"
    was = f"(was {safe(event.previous)})" if event.previous is not None else "(first)"
    sys.stdout.write(f"{event.start:9.1f} s  {safe(event.label):<20} {share:>7}  {was}\n")
    sys.stdout.flush()
