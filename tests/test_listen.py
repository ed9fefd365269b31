"""`edgeasc listen` on real streams (a WAV stream as arecord writes it, raw PCM), `predict -`
and folders: real subprocesses with torch and onnx hidden, on the exported files of
test_runtime."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
from test_runtime import DEVICE, LABELS, predict_json

from conftest import assert_one_line_error, run_cli, run_cli_here, write_wav
from edgeasc.runtime.deployed import DeployedModel, load_model
from edgeasc.runtime.features import D24_PARAMS, FeatureParams, compute_features
from edgeasc.runtime.framecache import SharedFrames, shares_frames
from edgeasc.runtime.stream import StreamClassifier, listen


def wav_stream(x: np.ndarray, sr: int, subtype: str = "PCM_16") -> bytes:
    """A WAV as a live recorder streams it: the RIFF and data sizes are unknown (0xFFFFFFFF)."""
    buf = io.BytesIO()
    sf.write(buf, x, sr, subtype=subtype, format="WAV")
    data = bytearray(buf.getvalue())
    data[4:8] = b"\xff\xff\xff\xff"
    pos = data.index(b"data")
    data[pos + 4:pos + 8] = b"\xff\xff\xff\xff"
    return bytes(data)


def listen_json(model, *args, stdin: bytes, device: bool = False):
    """`edgeasc listen MODEL ARGS --json` fed `stdin`: in this process, or (`device`) in a fresh
    interpreter where importing torch or onnx fails."""
    argv = ("listen", str(model), *args, "--json")
    proc = run_cli(*argv, python_prelude=DEVICE, stdin=stdin) if device else run_cli_here(*argv, stdin=stdin)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return proc, lines


def test_a_wav_stream_is_classified_window_by_window_like_predict(exported, tmp_path):
    _, paths = exported
    wav = write_wav(tmp_path / "r.wav", seconds=3.5, seed=5)  # 48 kHz stereo: resampled as it streams
    x, sr = sf.read(str(wav), dtype="float32")
    proc, lines = listen_json(paths["fp32"], "-", stdin=wav_stream(x, sr), device=True)
    assert proc.returncode == 0, proc.stderr
    assert [(w["time"], w["end"]) for w in lines] == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]
    _, whole = predict_json(paths["fp32"], wav, "--hop", "1")
    for w, ref in zip(lines, whole[0]["windows"][:3], strict=True):
        # the streaming resampler and the whole-file one agree away from the stream's ends
        assert np.abs(np.array(w["window_probabilities"]) - ref["probabilities"]).max() < 1e-4
        assert list(w["probabilities"]) == LABELS and w["latency_ms"] > 0
    summary = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(summary) == 1 and "end of stream: 3 windows over 3.0 s of stdin" in summary[0]


def test_raw_pcm_smoothing_and_hops(exported, tmp_path):
    _, paths = exported
    rng = np.random.default_rng(0)
    t = np.arange(int(4.2 * 22050)) / 22050
    x = (0.2 * np.sin(2 * np.pi * 300 * t * (1 + t))[:, None] + 0.05 * rng.standard_normal((len(t), 2)))
    raw = x.astype("<f4").tobytes()
    args = ("-", "--rate", "22050", "--channels", "2", "--format", "F32_LE")
    proc, plain = listen_json(paths["fp32"], *args, stdin=raw)
    assert proc.returncode == 0, proc.stderr
    assert [w["time"] for w in plain] == [0.0, 1.0, 2.0, 3.0]
    wav = tmp_path / "same.wav"
    sf.write(str(wav), x.astype(np.float32), 22050, subtype="FLOAT")
    _, whole = predict_json(paths["fp32"], wav, "--hop", "1")
    for w, ref in zip(plain, whole[0]["windows"][:4], strict=True):  # no resampling: the same numbers
        assert np.abs(np.array(w["window_probabilities"]) - ref["probabilities"]).max() < 1e-5
    _, smooth = listen_json(paths["fp32"], *args, "--smooth", "2", stdin=raw)
    raws = np.array([w["window_probabilities"] for w in smooth])
    for k, w in enumerate(smooth):  # the linear mean of this window and the one before
        want = raws[max(0, k - 1):k + 1].mean(axis=0)
        assert np.abs(np.array(list(w["probabilities"].values())) - want).max() < 1e-12
        assert w["label"] == LABELS[int(want.argmax())]
    _, dense = listen_json(paths["fp32"], *args, "--hop", "0.5", stdin=raw)
    assert [w["time"] for w in dense] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    for w, ref in zip(dense[::2], plain, strict=True):
        assert w["window_probabilities"] == ref["window_probabilities"]
    _, short = listen_json(paths["fp32"], *args, stdin=raw[:len(raw) // 10])  # 0.42 s: one padded window
    assert [(w["time"], w["end"]) for w in short] == [(0.0, 1.0)]


def test_listen_bad_input_is_one_line(exported, tmp_path):
    _, paths = exported
    m = str(paths["fp32"])

    def refused(*args, stdin=b"", needle=""):  # in this process: the torch-free listen has its own tests
        assert_one_line_error(run_cli_here("listen", *args, stdin=stdin), 2, needle)

    refused(m, "-", stdin=b"hello, this is not audio" * 10, needle="not a WAV stream")
    refused(m, "-", "--rate", "44100", "--channels", "3", needle="--channels must be 1 or 2")
    refused(m, "-", "--rate", "44100", "--channels", "1", "--format", "U8", needle="--format must be one of")
    refused(m, "-", "--rate", "12", "--channels", "1", needle="--rate 12 is not a sample rate")
    refused(m, "-", "--format", "S32_LE", needle="raw PCM needs --rate")  # a raw format alone is not a stream format
    refused(m, "-", "--smooth", "0", stdin=wav_stream(np.zeros((100, 1), np.float32), 8000), needle="--smooth")
    refused(m, str(tmp_path / "nowhere"), needle="no such file or FIFO")
    tone = wav_stream(np.zeros((8000, 1), np.float32), 8000)
    refused(m, "-", "--hop", "0", stdin=tone, needle="--hop must be between")
    refused(m, "-", "--hop", "2", stdin=tone, needle="and the window (1 s)")
    refused(m, "-", "--rate", "44100", "--channels", "1", stdin=tone, needle="the WAV stream is 8000 Hz")
    refused(str(paths["bare"]), "-", needle="not an edgeasc export")
    x = np.zeros((100, 3), np.float32)
    refused(m, "-", stdin=wav_stream(x, 8000), needle="3 channels")
    refused(m, "-", stdin=wav_stream(np.zeros((100, 1), np.float32), 8000, "PCM_U8"), needle="8-bit")


def test_ctrl_c_ends_listening_cleanly_with_a_summary(exported, tmp_path):
    _, paths = exported
    fifo = tmp_path / "mic"
    os.mkfifo(fifo)
    code = DEVICE + "\nfrom edgeasc.cli import main; main()"
    proc = subprocess.Popen([sys.executable, "-c", code, "listen", str(paths["fp32"]), str(fifo), "--rate", "22050",
                             "--channels", "1", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    with open(fifo, "wb") as writer:  # a live source: 2.5 s now, then silence without an end
        writer.write(np.zeros(int(2.5 * 22050), "<i2").tobytes())
        writer.flush()
        first = proc.stdout.readline()
        assert json.loads(first)["time"] == 0.0
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, errs = proc.communicate(timeout=60)
    assert proc.returncode == 0, errs
    lines = [line for line in errs.decode().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgeasc: stopped: 2 windows"), lines
    assert "Traceback" not in errs.decode()


def test_predict_reads_stdin_and_folders(exported, tmp_path):
    _, paths = exported
    folder = tmp_path / "recordings"
    a = write_wav(folder / "b.wav", seconds=1.0, seed=1)
    b = write_wav(folder / "sub" / "a.wav", seconds=1.0, seed=2)
    write_wav(folder / ".hidden" / "c.wav", seconds=1.0)
    (folder / "notes.txt").write_text("not audio")
    proc, results = predict_json(paths["fp32"], folder)
    assert proc.returncode == 0, proc.stderr
    assert [r["file"] for r in results] == [str(a), str(b)]
    piped = run_cli("predict", str(paths["fp32"]), "-", "--json", python_prelude=DEVICE, stdin=a.read_bytes())
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)[0]["probabilities"] == results[0]["probabilities"]
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run_cli_here("predict", str(paths["fp32"]), str(tmp_path / "empty")),
                          2, "no audio files")
    assert_one_line_error(run_cli_here("predict", str(paths["fp32"]), "-", "-", stdin=b""), 2, "once")


# ----------------------------------------------------------------------------- predict, streamed
def _whole_file_pieces(model, path, window=None, hop=None):
    from edgeasc.runtime.audio import fit_length
    from edgeasc.runtime.predict import recording_windows

    x, starts, n, seconds = recording_windows(model, path, window, hop)
    return starts, [fit_length(x[:, s:s + n], n) for s in starts], seconds


def test_streamed_windows_equal_the_whole_file_path_across_block_seams(exported, tmp_path, monkeypatch):
    """Files are read in blocks; the windows are the whole-file path's samples exactly, for
    resampled and native rates, mono to stereo, overlapping and sparse hops, short files."""
    import edgeasc.runtime.predict as predict
    import edgeasc.runtime.recording as recording
    from edgeasc.runtime.deployed import load_model

    _, paths = exported
    model = load_model(paths["fp32"])
    monkeypatch.setattr(recording, "BLOCK_FRAMES", 3001)  # many seams, none aligned to a window
    rng = np.random.default_rng(0)
    cases = [(write_wav(tmp_path / "a.wav", seconds=5.3, seed=1), None, 0.5),
             (write_wav(tmp_path / "b.wav", seconds=4.0, sr=22050, channels=1, seed=2), None, 1.7),
             (write_wav(tmp_path / "c.wav", seconds=0.4, seed=3), None, None),
             (write_wav(tmp_path / "d.wav", seconds=3.0, sr=44100, channels=1, seed=4), 2.0, 0.3)]
    flac = tmp_path / "e.flac"
    sf.write(str(flac), (0.1 * rng.standard_normal((44100 * 3, 2))).astype(np.float32), 44100, subtype="PCM_24")
    cases.append((flac, None, 1.0))
    for path, window, hop in cases:
        rec = predict.stream_windows(model, path, window, hop)
        starts, pieces, seconds = _whole_file_pieces(model, path, window, hop)
        assert rec.starts == starts and abs(rec.seconds - seconds) < 1e-9
        streamed = list(rec.windows())
        assert len(streamed) == len(pieces)
        for a, b in zip(streamed, pieces, strict=True):
            assert a.shape == b.shape and np.array_equal(a, b), path
    truncated = tmp_path / "t.wav"  # a header promising more than the file holds
    data = write_wav(tmp_path / "full.wav", seconds=3.0).read_bytes()
    truncated.write_bytes(data[:len(data) * 2 // 3])
    rec = predict.stream_windows(model, truncated)
    starts, pieces, _ = _whole_file_pieces(model, truncated)
    assert rec.starts == starts and all(np.array_equal(a, b) for a, b in zip(rec.windows(), pieces, strict=True))


def test_a_long_recording_is_classified_in_bounded_memory(exported, tmp_path):
    """10 minutes of 48 kHz stereo: decoded whole it is 230 MB of float32 before resampling;
    streamed, the process stays far below that."""
    _, paths = exported
    path = tmp_path / "long.wav"
    rng = np.random.default_rng(0)
    with sf.SoundFile(str(path), "w", 48000, 2, subtype="PCM_16") as f:
        for _ in range(60):
            f.write((0.1 * rng.standard_normal((480_000, 2))).astype(np.float32))
    # VmHWM: this process image's peak (ru_maxrss would include the forking pytest's memory)
    rss = ("import atexit, re, sys\n"
           "atexit.register(lambda: sys.stderr.write('peak ' + re.search(r'VmHWM:\\s+(\\d+)', "
           "open('/proc/self/status').read()).group(1) + '\\n'))")
    proc = run_cli("predict", str(paths["fp32"]), str(path), "--json", python_prelude=DEVICE + "\n" + rss)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)[0]["windows"]) == 600
    peak_mb = int(proc.stderr.split("peak ")[-1]) / 1024
    assert peak_mb < 200, peak_mb


# ----------------------------------------------------------------------------- bench --clip
def test_bench_end_to_end_times_every_stage(exported, tmp_path):
    from edgeasc.runtime.bench import end_to_end

    _, paths = exported
    clip = write_wav(tmp_path / "clip.wav", seconds=1.0, sr=44100)  # resampled to 22,050 Hz each run
    proc = run_cli("bench", str(paths["fp32"]), str(paths["wave"]), "--clip", str(clip), "--runs", "3", "--json",
                   python_prelude=DEVICE)
    assert proc.returncode == 0, proc.stderr
    fp32, wave = json.loads(proc.stdout)["results"]
    for r in (fp32, wave):
        ms = r["median_ms"]
        assert set(ms) == {"decode", "resample", "frontend", "network", "total"}
        assert all(v > 0 for v in ms.values()) and r["clip_rate"] == 44100 and r["clip_channels"] == 2
        assert ms["total"] >= max(ms[k] for k in ("decode", "resample", "frontend", "network"))
        assert r["total_over_network"] == ms["total"] / ms["network"]
        cpu = r["cpu_ms"]  # this thread's CPU time per stage: never more than the wall time it took
        assert set(cpu) == set(ms) and cpu["decode"] > 0 and cpu["network"] > 0
        # (a VM's thread clock and wall clock tick apart by microseconds under load: 2 % + 20 µs of slack)
        assert all(cpu[k] <= ms[k] * 1.02 + 0.02 for k in ms), (cpu, ms)
    assert not fp32["with_frontend"] and wave["with_frontend"]
    assert wave["median_ms"]["frontend"] < fp32["median_ms"]["frontend"]  # in its graph: only the copy is timed
    # a recording longer than the model's clip: only what the model sees is decoded and resampled per clip
    from edgeasc.runtime.bench import measure_end_to_end
    from edgeasc.runtime.deployed import load_model

    own = load_model(paths["fp32"]).clip_seconds
    long = write_wav(tmp_path / "long.wav", seconds=own * 6, sr=44100)
    short = write_wav(tmp_path / "short.wav", seconds=own / 2, sr=44100)
    assert measure_end_to_end(paths["fp32"], long, runs=1, warmup=0)["decoded_seconds"] == pytest.approx(own, abs=1 / 44100)
    assert measure_end_to_end(paths["fp32"], short, runs=1, warmup=0)["decoded_seconds"] == pytest.approx(own / 2,
                                                                                                          abs=1 / 44100)
    both = end_to_end([paths["fp32"]], clip, runs=2, warmup=0, fft=("scipy", "numpy"))["results"]
    assert [r["frontend_fft"] for r in both] == ["scipy", "numpy"]
    assert_one_line_error(run_cli_here("bench", str(paths["fp32"]), "--clip", str(tmp_path / "none.wav")), 2, "--clip", "no such file")
    assert_one_line_error(run_cli_here("bench", str(paths["bare"]), "--clip", str(clip)),
                          2, "not an edgeasc export")
    assert_one_line_error(run_cli_here("bench", str(paths["fp32"]), "--clip", str(clip), "--threads", "1,2"), 2, "one thread count")


def test_listen_rewrites_one_line_on_a_terminal(exported):
    import pty

    _, paths = exported
    master, slave = pty.openpty()
    code = DEVICE + "\nfrom edgeasc.cli import main; main()"
    raw = np.zeros(int(2.5 * 22050), "<i2").tobytes()
    proc = subprocess.run([sys.executable, "-c", code, "listen", str(paths["fp32"]), "-", "--rate", "22050",
                           "--channels", "1"], input=raw, stdout=slave, stderr=subprocess.PIPE, timeout=120)
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the pty is drained
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    assert proc.returncode == 0, proc.stderr
    text = shown.decode().replace("\r\n", "\n")  # the terminal turns the final newline into CR LF
    assert text.count("\r") == 2 and text.count("\x1b[K") == 2 and text.count("\n") == 1, repr(text)
    assert "0.0 s" in text and "1.0 s" in text


def test_the_default_batch_holds_at_most_2_gmac(exported):
    from edgeasc.runtime.deployed import load_model
    from edgeasc.runtime.predict import default_batch

    _, paths = exported
    m = load_model(paths["fp32"])
    assert m.metadata["macs_per_clip"] < 2e8 and default_batch(m) == 8  # small: batched for speed
    m.metadata["macs_per_clip"] = 5e8
    assert default_batch(m) == 4 and default_batch(m, window=2.0) == 2  # 1-s clips: a 2-s window costs twice
    m.metadata["macs_per_clip"] = 1.9e9  # the authors' DCASE'20 network: one window per call
    assert default_batch(m) == 1
    del m.metadata["macs_per_clip"]
    assert default_batch(m) == 1


# A stand-in for sounddevice (PortAudio is not on the test machine): one 16 kHz mono microphone
# playing a tone for 3.3 s, then Ctrl-C (KeyboardInterrupt from its read, where PortAudio's
# blocking read would be interrupted); one busy device. It reports one overflow after 2 s.
FAKE_SOUNDDEVICE = '''
import sys, types
import numpy as np
sd = types.ModuleType("sounddevice")
class PortAudioError(Exception):
    pass
sd.PortAudioError = PortAudioError
DEVICES = [{"name": "Fake USB Mic", "max_input_channels": 1, "default_samplerate": 16000.0},
           {"name": "Busy Mic", "max_input_channels": 2, "default_samplerate": 48000.0}]
def query_devices(device=None, kind=None):
    if device is None:
        return DEVICES[0]
    if isinstance(device, int):
        if device >= len(DEVICES):
            raise PortAudioError(f"Error querying device {device}")
        return DEVICES[device]
    found = [d for d in DEVICES if device.lower() in d["name"].lower()]
    if not found:
        raise ValueError(f"No input device matching {device!r}")
    return found[0]
class RawInputStream:
    def __init__(self, samplerate, channels, dtype, device, blocksize):
        if device == "Busy" or device == 1:
            raise PortAudioError("Error opening RawInputStream: Device unavailable [PaErrorCode -9985]")
        assert dtype == "float32"
        self.sr, self.ch, self.t, self.total = samplerate, channels, 0, int(3.3 * samplerate)
    def start(self):
        pass
    def read(self, frames):
        if self.t >= self.total:
            raise KeyboardInterrupt
        n = min(frames, self.total - self.t)
        t = (self.t + np.arange(n)) / self.sr
        x = np.repeat((0.3 * np.sin(2 * np.pi * 440 * t)).astype("<f4")[:, None], self.ch, 1)
        before, self.t = self.t, self.t + n
        return x.tobytes(), before < 2 * self.sr <= self.t
    def stop(self):
        pass
    def close(self):
        pass
sd.query_devices, sd.RawInputStream = query_devices, RawInputStream
sys.modules["sounddevice"] = sd
'''


def test_listen_reads_the_microphone_until_ctrl_c(exported):
    _, paths = exported
    proc = run_cli("listen", str(paths["fp32"]), "--json", python_prelude=DEVICE + "\n" + FAKE_SOUNDDEVICE)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.strip()]
    assert [(w["time"], w["end"]) for w in lines] == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]
    err = [x for x in proc.stderr.splitlines() if x.strip()]
    assert err[0] == "edgeasc: listening to Fake USB Mic (16000 Hz, 1 channel(s)); Ctrl-C stops"
    assert "stopped (1 input overflow(s): samples were lost while classifying): 3 windows over 3.0 s of Fake USB Mic" \
        in err[1] and len(err) == 2
    # the same samples through a pipe as raw PCM: the same windows, to the last bit
    t = np.arange(int(3.3 * 16000)) / 16000
    raw = (0.3 * np.sin(2 * np.pi * 440 * t)).astype("<f4").tobytes()
    _, piped = listen_json(paths["fp32"], "-", "--rate", "16000", "--channels", "1", "--format", "F32_LE", stdin=raw)
    assert [w["window_probabilities"] for w in piped] == [w["window_probabilities"] for w in lines]


def test_microphone_problems_are_one_line(exported, monkeypatch):
    _, paths = exported
    m = str(paths["fp32"])
    # a device install without sounddevice: a fresh interpreter, torch hidden
    assert_one_line_error(run_cli("listen", m, python_prelude=DEVICE + "\nsys.modules['sounddevice'] = None"), 2,
                          "reading a microphone needs sounddevice", "mic extra", "libportaudio2")
    # what the microphone refuses: in this process, with the fake in sys.modules (restored after)
    fake: dict = {}
    exec(FAKE_SOUNDDEVICE.replace('sys.modules["sounddevice"] = sd', ""), fake)
    monkeypatch.setitem(sys.modules, "sounddevice", fake["sd"])
    assert_one_line_error(run_cli_here("listen", m, "--mic", "Nope"), 2,
                          "microphone 'Nope': no such input device", "python -m sounddevice")
    assert_one_line_error(run_cli_here("listen", m, "--mic", "7"), 2, "no such input device")
    assert_one_line_error(run_cli_here("listen", m, "--mic", "Busy"), 2,
                          "cannot open microphone 'Busy' (Busy Mic) at 48000 Hz", "Device unavailable")
    assert_one_line_error(run_cli_here("listen", m, "--channels", "2"), 2, "has 1 input channel(s), --channels 2")
    assert_one_line_error(run_cli_here("listen", m, "-", "--mic", "Fake"), 2, "not both")


# ---- overlapping windows share their interior STFT frames (runtime/framecache.py): each window's
# features must be those of the window alone, to float32 rounding, for both frontend kinds, on a
# real WAV stream resampled as it streams (0.1-s blocks: every window spans many block seams), for
# hops on the STFT grid and off it, across windows skipped as silent.

PERCEPTUAL = FeatureParams(clip_seconds=1.0)
LOGMEL = replace(D24_PARAMS, clip_seconds=1.0)


def _gapped_stream() -> bytes:
    """4.1 s of 48 kHz stereo 16-bit: a chirp, noise, and 1.3 s of digital silence at 1.6 s."""
    rng = np.random.default_rng(3)
    t = np.arange(int(4.1 * 48000)) / 48000
    x = 0.3 * np.sin(2 * np.pi * 300 * t * (1 + t))[:, None] + 0.05 * rng.standard_normal((len(t), 2))
    x[int(1.6 * 48000):int(2.9 * 48000)] = 0
    return wav_stream(x.astype(np.float32), 48000)


def _recording(model: DeployedModel, params: FeatureParams) -> tuple[DeployedModel, list]:
    """The model with the frontend `params`, its network replaced by one that records its input."""
    meta = {**model.metadata, "feature_params": params.to_dict(), "clip_seconds": params.clip_seconds}
    recorder = DeployedModel(model.path, model.session, meta)
    inputs = []

    def run(x):
        inputs.append(x.copy())
        return [np.zeros((1, 3), dtype=np.float32)]

    recorder.run = run
    return recorder, inputs


@pytest.mark.parametrize("params, hop, on_grid", [
    (PERCEPTUAL, 2048 / 22050, True),   # 4 STFT hops of 512
    (PERCEPTUAL, 3 * 512 / 22050, True),
    (PERCEPTUAL, 0.25, False),          # 5,513 samples: off the grid, recomputed
    (LOGMEL, 0.25, True),               # 16 STFT hops of 500
    (LOGMEL, 3 * 500 / 32000, True),    # 3 STFT hops: 21 windows a second
    (LOGMEL, 0.3, False),               # 19.2 STFT hops
])
def test_shared_frames_equal_each_window_alone(exported, params, hop, on_grid):
    model = load_model(exported[1]["fp32"])
    seen = {}
    for shared in (True, False):
        m, inputs = _recording(model, params)
        windows = list(listen(m, io.BytesIO(_gapped_stream()), hop=hop, silence_db=-100.0, shared_frames=shared))
        seen[shared] = (inputs, [(w.start, w.silent) for w in windows])
    (got, timing), (want, timing_want) = seen[True], seen[False]
    assert timing == timing_want
    n_window = params.n_samples(1.0)
    assert shares_frames(params, n_window, params.n_samples(hop)) is on_grid
    assert StreamClassifier(m, hop=hop).frames is not None if on_grid else StreamClassifier(m, hop=hop).frames is None
    skipped = sum(silent for _, silent in timing)
    assert skipped > 0 and len(got) == len(timing) - skipped >= 5  # a gap in the shared frames
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape == (1, 2, params.n_mels, params.n_frames(1.0))
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("params", [PERCEPTUAL, LOGMEL])
def test_shared_frames_on_a_loud_burst_and_stereo_that_differs(params):
    """The perceptual top_db floor follows each window's own loudest bin: a burst entering and
    leaving the window moves it while the shared spectra stay."""
    rng = np.random.default_rng(1)
    n, hop = params.n_samples(1.0), 4 * params.hop_length
    x = (1e-3 * rng.standard_normal((2, 3 * n))).astype(np.float32)
    x[0, n + 100:n + 900] += 0.9 * np.sin(np.arange(800) * 0.3).astype(np.float32)  # one channel only
    frames = SharedFrames(params, n, hop)
    for start in range(0, 2 * n, hop):
        piece = x[:, start:start + n]
        np.testing.assert_allclose(frames.features(piece, start), compute_features(piece, params),
                                   rtol=1e-5, atol=1e-5)
    per_window = 1 + n // params.hop_length
    assert frames.computed < 0.5 * per_window * len(range(0, 2 * n, hop))  # most frames were shared


def test_shared_frames_give_the_real_network_the_same_probabilities(exported):
    model = load_model(exported[1]["fp32"])
    runs = [[w.probabilities for w in listen(model, io.BytesIO(_gapped_stream()), hop=10 * 512 / 22050,
                                             shared_frames=shared) if not w.silent] for shared in (True, False)]
    assert len(runs[0]) == len(runs[1]) > 10
    assert np.abs(np.array(runs[0]) - np.array(runs[1])).max() < 1e-5
