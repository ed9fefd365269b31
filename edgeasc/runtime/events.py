"""Scene changes from a stream of classified windows (`edgeasc listen --events`). torch-free,
pure: no I/O, no model, no clock; the caller feeds one window at a time.

The state machine holds the scene last reported (None before the first) and one candidate
run: the label that has been the top label, with probability >= threshold, in the latest
consecutive windows. A window below the threshold ends the run (it is evidence for nothing);
a window whose top label differs starts a new run. When a run reaches `hold` windows and its
label is not the scene reported, a SceneEvent is reported: the new label, the start of the
run's first window, the mean top probability over the run, and the label it replaced. So a
sound shorter than `hold` windows (a door, a passing car) never changes the scene, and a
scene must be confidently on top `hold` times in a row to be reported.

Silence is a state like a label: a window whose level is below --silence-db is never
classified (runtime/stream.py); it counts towards a run of SILENCE with no probability.

Memory is constant: the state, one run, and one total per label seen.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeasc.errors import ConfigError

SILENCE = "silence"
UNDECIDED = "undecided"  # stream time before the first reported scene

DEFAULT_THRESHOLD = 0.5   # above 1/2 the label outweighs all the others together, for any number of classes
DEFAULT_HOLD = 3          # with the default 1-s hop: a scene must last 3 s; shorter sounds are spikes


@dataclass(frozen=True)
class SceneEvent:
    start: float               # stream time of the first window of the run that confirmed it, seconds
    label: str                 # a model label, or SILENCE
    probability: float | None  # mean top-label probability over the run's windows; None for SILENCE
    previous: str | None       # the scene it replaced; None for the first
    windows: int               # the run's length (the hold)
    at: str | None = None      # wall-clock time the caller reported it (UTC, ISO 8601); the tracker has no clock

    def to_dict(self) -> dict:
        return {"event": "scene", "time": round(self.start, 3), "label": self.label,
                "probability": self.probability, "previous": self.previous, "at": self.at}


def check_event_options(threshold: float, hold: int) -> None:
    if not 0.0 < threshold <= 1.0:  # NaN fails this too
        raise ConfigError(f"--threshold must be a probability in (0, 1], got {threshold}")
    if not 1 <= hold <= 10_000:
        raise ConfigError(f"--hold must be between 1 and 10000 windows, got {hold}")


class SceneTracker:
    """Feed update() the windows in stream order; it returns a SceneEvent when the scene changes."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, hold: int = DEFAULT_HOLD):
        check_event_options(threshold, hold)
        self.threshold, self.hold = threshold, hold
        self.scene: str | None = None
        self.since = 0.0                 # stream time the current scene (or the undecided start) began
        self.run_label: str | None = None
        self.run_start = 0.0
        self.run_windows = 0
        self.run_sum = 0.0
        self.seconds: dict[str, float] = {}  # closed spans only; time_per_scene adds the open one
        self.origin: float | None = None

    def update(self, start: float, label: str, probability: float | None) -> SceneEvent | None:
        """One window: its start (s), its top label (or SILENCE) and that label's probability
        (None for SILENCE)."""
        if self.origin is None:
            self.origin = self.since = start
        if label != SILENCE and (probability is None or not probability >= self.threshold):
            self.run_label, self.run_windows, self.run_sum = None, 0, 0.0  # a weak window ends any run
            return None
        if label == self.run_label:
            self.run_windows += 1
        else:
            self.run_label, self.run_start, self.run_windows, self.run_sum = label, start, 1, 0.0
        self.run_sum += probability or 0.0
        if self.run_windows != self.hold or label == self.scene:
            return None
        event = SceneEvent(self.run_start, label, None if label == SILENCE else self.run_sum / self.run_windows,
                           self.scene, self.run_windows)
        self._add(self.scene or UNDECIDED, self.run_start - self.since)
        self.scene, self.since = label, self.run_start
        return event

    def _add(self, state: str, seconds: float) -> None:
        if seconds > 0:
            self.seconds[state] = self.seconds.get(state, 0.0) + seconds

    def time_per_scene(self, end: float) -> dict[str, float]:
        """Seconds per reported scene, from its event's start to the next event's (the last to
        `end`, the end of the last window); UNDECIDED: before the first event. Largest first."""
        totals = dict(self.seconds)
        if self.origin is not None and end > self.since:
            state = self.scene or UNDECIDED
            totals[state] = totals.get(state, 0.0) + end - self.since
        return dict(sorted(totals.items(), key=lambda kv: (-kv[1], kv[0])))
