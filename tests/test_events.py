"""`edgeasc listen --events`: the scene state machine on crafted probability sequences, and one
end-to-end run of a real WAV stream that switches scene (with spikes shorter than the hold and
a silence) through a tiny network trained here to tell the three scenes apart."""

import io
import json
import math
import pickle
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import soundfile as sf

from conftest import run_cli, run_cli_here
from edgeasc.errors import ConfigError
from edgeasc.runtime.events import SILENCE, UNDECIDED, SceneEvent, SceneTracker
from edgeasc.runtime.stats import LogHistogram, WindowStats

DEVICE = "import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None"
SR = 22050
LABELS = ["hum", "noise", "rumble"]


# ----------------------------------------------------------------------------- the state machine
def feed(tracker, windows, hop=1.0):
    """windows: (label, probability) per window, one every `hop` s; the events, as tuples."""
    found = []
    for k, (label, p) in enumerate(windows):
        event = tracker.update(k * hop, label, p)
        if event is not None:
            found.append((event.start, event.label, event.probability, event.previous))
    return found


def test_a_scene_is_reported_after_hold_confident_windows_and_spikes_are_not():
    t = SceneTracker(threshold=0.6, hold=3)
    seq = ([("a", 0.9), ("a", 0.7), ("a", 0.8)]          # 0-2: a confirmed at its first window
           + [("b", 0.95), ("b", 0.99)]                  # 3-4: a 2-window spike: nothing
           + [("a", 0.9)]                                # 5: a again (it is the scene: nothing)
           + [("b", 0.7), ("b", 0.5), ("b", 0.8), ("b", 0.9)]  # 6-9: a weak window breaks the run
           + [("b", 0.7)]                                # 10: third in a row since 8 -> b at 8
           + [(SILENCE, None)] * 3                       # 11-13: silence needs the hold too
           + [("c", 0.61), ("c", 0.6), ("c", 1.0)])      # 14-16: exactly the threshold counts
    events = feed(t, seq)
    assert events == [(0.0, "a", pytest.approx(0.8), None), (8.0, "b", pytest.approx(0.8), "a"),
                      (11.0, SILENCE, None, "b"), (14.0, "c", pytest.approx((0.61 + 0.6 + 1.0) / 3), SILENCE)]
    # time per scene: each from its event's start to the next one's; the last to the end given
    assert t.time_per_scene(17.0) == {"b": 3.0, "a": 8.0, SILENCE: 3.0, "c": 3.0} | {}
    assert list(t.time_per_scene(17.0)) == ["a", "b", "c", SILENCE]  # largest first, then by name


def test_time_before_the_first_scene_is_undecided_and_hold_one_reports_every_change():
    t = SceneTracker(threshold=0.5, hold=2)
    assert feed(t, [("a", 0.4), ("a", 0.45), ("b", 0.9), ("b", 0.9), ("b", 0.2)], hop=0.5) == \
        [(1.0, "b", pytest.approx(0.9), None)]
    assert t.time_per_scene(3.0) == {"b": 2.0, UNDECIDED: 1.0}
    assert SceneTracker().time_per_scene(0.0) == {}  # nothing fed
    one = SceneTracker(threshold=0.5, hold=1)
    assert [e[1] for e in feed(one, [("a", 0.9), ("b", 0.9), ("b", 0.9), ("a", 0.9)])] == ["a", "b", "a"]
    assert SceneEvent(1.23456, "a", 0.5, None, 3).to_dict() == \
        {"event": "scene", "time": 1.235, "label": "a", "probability": 0.5, "previous": None, "at": None}
    for bad in ({"threshold": 0.0}, {"threshold": 1.5}, {"threshold": math.nan}, {"hold": 0}, {"hold": 10_001}):
        with pytest.raises(ConfigError):
            SceneTracker(**bad)


# ----------------------------------------------------------------------------- bounded statistics
def test_the_latency_histogram_is_within_its_stated_error_of_the_exact_quantiles():
    rng = np.random.default_rng(0)
    for values in (rng.lognormal(1.0, 0.8, 20_001), rng.uniform(0.5, 50, 999), np.array([3.0]),
                   np.concatenate([np.full(500, 2.0), np.full(501, 700.0)])):
        h = LogHistogram()
        for v in values:
            h.add(float(v))
        ordered = np.sort(values)
        for q in (0.0, 0.1, 0.5, 0.9, 0.99, 1.0):
            exact = ordered[min(int(q * len(values)), len(values) - 1)]
            assert abs(h.quantile(q) - exact) <= h.relative_error * exact + 1e-12, (q, h.quantile(q), exact)
        assert h.count == len(values) and h.mean == pytest.approx(values.mean())
        assert (h.min, h.max) == (values.min(), values.max())
    assert round(LogHistogram().relative_error, 5) == 0.00995 and LogHistogram().bins == 1047
    assert LogHistogram().quantile(0.5) is None
    h = LogHistogram()
    for v in (0.0, 1e-9, 1e9):  # outside [1 µs, 1000 s): counted in the edge bins, reported at the range's edges
        h.add(v)
    assert h.quantile(0.0) == pytest.approx(1e-3 * math.sqrt(1.02)) and 1e6 < h.quantile(1.0) < 1.02e6
    assert (h.min, h.max, h.count) == (0.0, 1e9, 3)


def test_window_statistics_do_not_grow_with_the_number_of_windows():
    def filled(n):
        s = WindowStats()
        rng = np.random.default_rng(1)
        for k, v in enumerate(rng.lognormal(1.0, 0.5, n)):
            s.add(None if k % 10 == 0 else LABELS[k % 3], float(v))
        return s

    small, large = filled(1_000), filled(200_000)
    # 200x the windows: the same 8-KiB histogram and counters; a few bytes more only where pickle writes
    # a larger int in more bytes (a list of latencies would add 1.6 MB)
    assert 0 <= len(pickle.dumps(large)) - len(pickle.dumps(small)) < 32
    assert (large.windows, large.silent, sum(large.labels.values())) == (200_000, 20_000, 180_000)
    assert large.latency_ms.count == 180_000  # silent windows have no classification latency


# ----------------------------------------------------------------------------- end to end
def here(*args):
    r = run_cli_here(*args)
    return r.returncode, r.stdout, r.stderr


def scene(kind: str, seconds: float, rng) -> np.ndarray:
    """Mono samples at 22,050 Hz of one synthetic scene: a hum, white noise, a rumble (noise
    integrated, its slow drift removed), or near-silence (white noise at -80 dBFS)."""
    n = int(round(seconds * SR))
    t = np.arange(n) / SR
    if kind == "hum":
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(150, 250) * t + rng.uniform(0, 6))
    elif kind == "noise":
        x = 0.1 * rng.standard_normal(n)
    elif kind == "rumble":
        x = np.cumsum(rng.standard_normal(n))
        x = x - np.convolve(x, np.ones(64) / 64, "same")
        x = 0.1 * x / x.std()
    else:
        return (1e-4 * rng.standard_normal(n)).astype(np.float32)
    return (x + 0.003 * rng.standard_normal(n)).astype(np.float32)


def build_scenes_model(tmp_path_factory):
    """The CP-ResNet of test_runtime (width 8), trained for 60 steps to tell a hum, noise and a
    rumble apart (about 5 s), exported to ONNX (conftest's session fixture `scenes_model`: built
    once for this module and test_mqtt)."""
    import torch

    from edgeasc.export.pipeline import export_checkpoint
    from edgeasc.models import ModelConfig, build_model
    from edgeasc.runtime.features import FeatureParams, perceptual_mel
    from edgeasc.train.checkpoint import save_checkpoint

    tmp = tmp_path_factory.mktemp("events")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_model(ModelConfig(width=8, n_classes=3))
    x = np.stack([perceptual_mel(np.repeat(scene(LABELS[k % 3], 1.0, rng)[None], 2, 0)) for k in range(24)])
    mean, std = x.mean(axis=(0, 1, 3)), x.std(axis=(0, 1, 3)) + 1e-3
    features = torch.from_numpy(((x - mean[:, None]) / std[:, None]).astype(np.float32))
    targets = torch.tensor([k % 3 for k in range(24)])
    opt = torch.optim.Adam(model.parameters(), 0.01)
    model.train()
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(features), targets).backward()
        opt.step()
    # BatchNorm's running statistics, after 60 steps at momentum 0.1, still lag the weights: in
    # eval mode such a network can call every noise clip a rumble, and whether it does depends on
    # the CPU's rounding (it did on an AVX-512 Xeon, not on an EPYC). Recomputed over the whole
    # batch (torch's own SWA helper), eval mode computes what training saw, on any CPU
    torch.optim.swa_utils.update_bn([features], model)
    model.eval()
    with torch.no_grad():
        assert model(features).argmax(1).tolist() == targets.tolist()
    ckpt = tmp / "m.pt"
    save_checkpoint(ckpt, {"model_config": model.config.to_dict(), "labels": LABELS,
                           "feature_params": FeatureParams(clip_seconds=1.0).to_dict(), "channels": 2,
                           "normalization": {"mean": mean.tolist(), "std": std.tolist()},
                           "model": model.state_dict(), "epoch": 1, "kind": "final"})
    export_checkpoint(ckpt, tmp / "scenes.onnx")
    return tmp / "scenes.onnx"


# 25 s: a hum with a 1-s noise spike, a rumble with a 2-s hum spike, 4 s of near-silence, noise
SCRIPT = [("hum", 4), ("noise", 1), ("hum", 3), ("rumble", 5), ("hum", 2), ("rumble", 2), ("quiet", 4), ("noise", 4)]


def scene_stream() -> bytes:
    """The script as a WAV stream a live recorder writes (unknown length), 22,050 Hz float mono."""
    rng = np.random.default_rng(7)
    x = np.concatenate([scene(kind, seconds, rng) for kind, seconds in SCRIPT])
    buf = io.BytesIO()
    sf.write(buf, x, SR, subtype="FLOAT", format="WAV")
    data = bytearray(buf.getvalue())
    data[4:8] = b"\xff\xff\xff\xff"
    pos = data.index(b"data")
    data[pos + 4:pos + 8] = b"\xff\xff\xff\xff"
    return bytes(data)


def test_listen_events_end_to_end(scenes_model, tmp_path):
    """The spikes (1 s of noise in the hum, 2 s of hum in the rumble) are shorter than the hold
    and change nothing; each event's probability is the mean of its run's window probabilities
    as plain `listen` reports them; silence is a scene, never classified."""
    stream = scene_stream()
    plain = run_cli("listen", str(scenes_model), "-", "--json", "--silence-db", "-50", python_prelude=DEVICE,
                    stdin=stream)
    assert plain.returncode == 0, plain.stderr
    per_window = [json.loads(line) for line in plain.stdout.splitlines()]
    assert [w["label"] for w in per_window] == \
        ["hum"] * 4 + ["noise"] + ["hum"] * 3 + ["rumble"] * 5 + ["hum"] * 2 + ["rumble"] * 2 + [SILENCE] * 4 + \
        ["noise"] * 4
    assert all(w["probability"] is None and w["level_db"] < -70 for w in per_window[17:21])
    assert all(w["probability"] >= 0.6 and w["level_db"] > -30 for w in per_window if w["label"] != SILENCE)

    def mean(first):
        return pytest.approx(np.mean([w["probability"] for w in per_window[first:first + 3]]), abs=1e-12)

    started = datetime.now(timezone.utc).replace(microsecond=0)
    proc = run_cli("listen", str(scenes_model), "-", "--events", "--json", "--silence-db", "-50",
                   python_prelude=DEVICE, stdin=stream)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    # each event's wall-clock time of decision, UTC to the second, in order, during the run
    at = [datetime.fromisoformat(line.pop("at")) for line in lines[:-1]]
    assert started <= at[0] and at == sorted(at) and at[-1] <= datetime.now(timezone.utc)
    assert all(t.utcoffset() == timedelta(0) and t.microsecond == 0 for t in at)
    assert lines[:-1] == [
        {"event": "scene", "time": 0.0, "label": "hum", "probability": mean(0), "previous": None},
        {"event": "scene", "time": 8.0, "label": "rumble", "probability": mean(8), "previous": "hum"},
        {"event": "scene", "time": 17.0, "label": SILENCE, "probability": None, "previous": "rumble"},
        {"event": "scene", "time": 21.0, "label": "noise", "probability": mean(21), "previous": SILENCE}]
    summary = lines[-1]
    assert summary["median_latency_ms"] > 0
    del summary["median_latency_ms"]
    assert summary == {"event": "summary", "stopped": "end of stream", "windows": 25, "silent_windows": 4,
                       "seconds": 25.0, "scene_seconds": {"rumble": 9.0, "hum": 8.0, "noise": 4.0, SILENCE: 4.0}}
    assert proc.stderr.startswith("edgeasc: end of stream: 25 windows over 25.0 s of stdin; scenes: rumble 9.0 s, "
                                  "hum 8.0 s, noise 4.0 s, silence 4.0 s; 4 silent, not classified; median latency ")
    # a hold of 5: the noise spike splits the hum into runs of 4 and 3 windows, the silence and the
    # noise last 4: the 5-s rumble is the only scene, the first 8 s undecided
    source = tmp_path / "scenes.wav"
    source.write_bytes(stream)
    code, out, err = here("listen", str(scenes_model), str(source), "--events", "--hold", "5", "--silence-db", "-50")
    assert code == 0, err
    assert out.splitlines() == [f"{8.0:9.1f} s  {'rumble':<20} "
                                f"{100 * np.mean([w['probability'] for w in per_window[8:13]]):5.1f} %  (first)"]
    assert "scenes: rumble 17.0 s, undecided 8.0 s;" in err
    # without --silence-db, the quiet part is classified like any other window
    code, out, _ = here("listen", str(scenes_model), str(source), "--events", "--json")
    assert code == 0 and SILENCE not in out


def test_silent_windows_never_reach_the_model(scenes_model):
    from edgeasc.runtime.deployed import load_model
    from edgeasc.runtime.stream import StreamClassifier

    model = load_model(scenes_model)
    calls = []

    class Counting:  # the onnxruntime session, counting its runs
        def __init__(self, session):
            self.session = session

        def run(self, *args):
            calls.append(1)
            return self.session.run(*args)

        def get_inputs(self):
            return self.session.get_inputs()

    model.session = Counting(model.session)
    rng = np.random.default_rng(7)
    x = np.concatenate([scene(kind, seconds, rng) for kind, seconds in SCRIPT])
    stereo = np.repeat(x[None], 2, 0)
    windows = StreamClassifier(model, silence_db=-50).push(stereo)
    assert [w.silent for w in windows] == [False] * 17 + [True] * 4 + [False] * 4
    assert len(calls) == 21 and all(w.probabilities is None and w.smoothed is None for w in windows[17:21])
    assert all(abs(w.level_db + 80) < 0.1 for w in windows[17:21])  # white noise of RMS 1e-4: -80 dBFS
    calls.clear()
    assert len(StreamClassifier(model).push(stereo)) == 25 and len(calls) == 25  # without: every window


def test_event_options_are_checked(scenes_model):
    m = str(scenes_model)
    for args, needle in ((["--threshold", "0"], "--threshold must be a probability"),
                         (["--threshold", "nan"], "--threshold must be a probability"),
                         (["--hold", "0"], "--hold must be between 1 and 10000"),
                         (["--silence-db", "3"], "--silence-db must be a level in dBFS"),
                         (["--silence-db", "-inf"], "--silence-db must be a level in dBFS")):
        code, _, err = here("listen", m, "-", "--events", *args)
        assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, (args, err)


def test_sigterm_ends_listening_with_the_summary(scenes_model, tmp_path):
    import os

    fifo = tmp_path / "mic"
    os.mkfifo(fifo)
    code = DEVICE + "\nfrom edgeasc.cli import main; main()"
    proc = subprocess.Popen([sys.executable, "-c", code, "listen", str(scenes_model), str(fifo), "--rate", str(SR),
                             "--channels", "1", "--format", "F32_LE", "--events", "--json", "--hold", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with open(fifo, "wb") as writer:  # a live source: 3 s of hum now, then nothing and no end
        writer.write(scene("hum", 3.0, np.random.default_rng(0)).tobytes())
        writer.flush()
        first = json.loads(proc.stdout.readline())
        assert (first["event"], first["time"], first["label"]) == ("scene", 0.0, "hum")
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, errs = proc.communicate(timeout=60)
    assert proc.returncode == 0, errs
    summary = json.loads(out.decode().splitlines()[-1])
    assert (summary["stopped"], summary["windows"], summary["scene_seconds"]) == ("terminated", 3, {"hum": 3.0})
    lines = [line for line in errs.decode().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgeasc: terminated: 3 windows over 3.0 s of"), lines


def test_predict_over_many_files_holds_one_result_at_a_time(scenes_model, tmp_path, monkeypatch):
    """predict writes each file's JSON, CSV rows and table row as it comes and drops its
    Prediction (with its windows' probabilities): memory does not grow with the files. The
    output is byte for byte what the whole list gave."""
    import weakref

    import edgeasc.runtime.predict as predict
    from edgeasc.cli.predict import predictions_csv
    from edgeasc.runtime.deployed import load_model

    rng = np.random.default_rng(3)
    files = []
    for k in range(12):
        path = tmp_path / "rec" / f"{k:02d}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(str(path), scene(LABELS[k % 3], 2.0, rng), SR)
        files.append(path)
    (tmp_path / "rec" / "05.wav").write_bytes(b"RIFF broken")  # an error row among them
    expected = list(predict.predict_files(load_model(scenes_model), files))
    alive_counts = []
    real = predict.predict_files

    def watched(*args, **kwargs):
        refs = []
        for p in real(*args, **kwargs):
            refs.append(weakref.ref(p))
            yield p
            alive_counts.append(sum(r() is not None for r in refs))
            del p

    monkeypatch.setattr(predict, "predict_files", watched)
    r = run_cli_here("predict", str(scenes_model), str(tmp_path / "rec"), "--json", "--csv", str(tmp_path / "p.csv"))
    assert r.returncode == 1 and "05.wav" in r.stderr  # the broken file
    assert len(alive_counts) == 12 and max(alive_counts) <= 1, alive_counts  # only the one being written
    assert r.stdout == json.dumps([p.to_dict(1) for p in expected], indent=2) + "\n"
    assert (tmp_path / "p.csv").read_text() == predictions_csv(expected)
    table = run_cli_here("predict", str(scenes_model), str(tmp_path / "rec"), "--top-k", "2")
    assert table.returncode == 1 and table.stdout.count(".wav") == 12 and "error" in table.stdout
    assert max(alive_counts[12:]) <= 1
    # past STREAMED_TABLE files the table is printed a row as each file is done (rich renders a
    # table whole: 4 kB per file at its peak over 10,000 files, RESULTS.md "many files")
    import edgeasc.cli.predict as device

    monkeypatch.setattr(device, "STREAMED_TABLE", 4)
    printed = []

    def counting(*args, **kwargs):
        for p in watched(*args, **kwargs):
            printed.append(sys.stdout.getvalue().count("\n"))  # lines out before this file's row
            yield p

    monkeypatch.setattr(predict, "predict_files", counting)
    streamed = run_cli_here("predict", str(scenes_model), str(tmp_path / "rec"), "--top-k", "2")
    assert streamed.returncode == 1 and printed == list(range(2, 14))  # header and rule, then a row per file
    lines = streamed.stdout.splitlines()
    width = max(len(str(f)) for f in files)
    assert lines[0].split() == ["file", "seconds", "windows", "prediction", "probability", "next"]
    assert lines[1].startswith("-" * width + "  " + "-" * 9 + "  ")
    for line, p in zip(lines[2:], expected, strict=True):
        row = device.prediction_row(p, 2)
        assert line[:width].rstrip() == str(p.path) and line[width:width + 2] == "  "
        if p.error:
            assert line[width:].split() == ["error"]
        else:  # right-aligned numbers end at the same column on every row
            assert line[width + 2:width + 11] == f"{row[1]:>9}" and line[width + 13:width + 20] == f"{row[2]:>7}"
            assert line[width + 20:].split()[:3] == [row[3], *row[4].split()] and line.endswith(row[5])
    empty = run_cli_here("predict", str(scenes_model), str(files[5]), "--json")
    assert empty.stdout == json.dumps([{"file": str(files[5]), "error": expected[5].error}], indent=2) + "\n"
