"""`predict -`: a WAV on stdin is read block by block with `listen`'s parser and streaming
resampler, its windows cut as they complete; real WAV bytes through a real stdin (a
TextIOWrapper over bytes, as sys.stdin is). The reference is the whole-file path
(recording_windows: the bytes decoded whole by soundfile, resampled whole by soxr). And one
input failing (unreadable, cut short, out of memory) is that input's error row only."""

import csv
import io
import json
import sys

import numpy as np
import pytest
import soundfile as sf
from test_predict import LABELS, RATE, expected_logits, write_model

from conftest import run_cli_here
from edgeasc.runtime import predict as predict_module
from edgeasc.runtime.deployed import load_model
from edgeasc.runtime.predict import PipedRecording, predict_files, recording_windows, softmax


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_model(write_model(tmp_path_factory.mktemp("toy") / "toy.onnx"))


def wav_bytes(x: np.ndarray, rate: int, subtype: str = "FLOAT", live: bool = False, trailer: bytes = b"") -> bytes:
    """A WAV file's bytes; live: the RIFF and data sizes unknown (0xFFFFFFFF), as a recorder
    streams them; trailer: a chunk after the audio (its size in the RIFF header)."""
    buf = io.BytesIO()
    sf.write(buf, x, rate, subtype=subtype, format="WAV")
    data = bytearray(buf.getvalue()) + trailer
    data[4:8] = (len(data) - 8).to_bytes(4, "little")
    if live:
        data[4:8] = b"\xff\xff\xff\xff"
        pos = data.index(b"data")
        data[pos + 4:pos + 8] = b"\xff\xff\xff\xff"
    return bytes(data)


def set_stdin(monkeypatch, data: bytes | io.RawIOBase) -> None:
    raw = io.BytesIO(data) if isinstance(data, bytes) else io.BufferedReader(data)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(raw))


def piped_and_whole(model, monkeypatch, data: bytes, **kwargs):
    """(starts, windows, seconds) read from stdin as a stream, then decoded whole."""
    set_stdin(monkeypatch, data)
    piped = PipedRecording(model, sys.stdin.buffer, kwargs.get("window"), kwargs.get("hop"))
    pieces = list(piped.windows())
    set_stdin(monkeypatch, data)
    x, starts, n_window, seconds = recording_windows(model, "-", kwargs.get("window"), kwargs.get("hop"))
    whole = [x[:, s:s + n_window] for s in starts]
    whole = [np.pad(w, ((0, 0), (0, n_window - w.shape[-1]))) for w in whole]
    return piped, pieces, (starts, whole, seconds)


# 4000-sample windows (0.5 s at 8 kHz), 64-sample STFT hop: lengths around every edge of the plan
@pytest.mark.parametrize("n, hop", [
    (1, None), (3999, None), (4000, None), (4063, None), (4064, None), (20_000, None), (20_100, None),
    (70_001, None), (200_003, None), (200_003, 0.35), (150_000, 0.0085)])
def test_piped_windows_are_the_whole_files_at_the_models_rate(model, monkeypatch, n, hop):
    """At the model's rate the piped windows are the whole-file path's, sample for sample: the
    grid windows, the end-aligned last one (when it overhangs by an STFT hop or more), the
    zero-padded single window of a short recording, across read blocks of 65,536 frames."""
    x = (0.1 * np.random.default_rng(n).standard_normal((n, 2)) + 0.05).astype(np.float32)
    piped, pieces, (starts, whole, seconds) = piped_and_whole(model, monkeypatch, wav_bytes(x, RATE), hop=hop)
    assert piped.starts == starts and piped.seconds == seconds == n / RATE
    assert len(pieces) == len(whole) and all(np.array_equal(a, b) for a, b in zip(pieces, whole, strict=True))


@pytest.mark.parametrize("rate, channels, subtype, n", [
    (16000, 2, "FLOAT", 41_235), (44100, 1, "PCM_16", 300_007), (48000, 2, "PCM_24", 100_000), (11025, 1, "PCM_32", 5)])
def test_piped_windows_resampled_match_the_whole_file_within_the_streaming_tolerance(model, monkeypatch, rate,
                                                                                       channels, subtype, n):
    """Resampled (stereo mixed to the mono model after resampling, as the whole-file path does):
    the same starts and length, ceil(frames * 8000 / rate) samples; the samples within what soxr's
    streaming resampler promises against soxr on the whole file (test_predict's tolerance)."""
    x = 0.1 * np.random.default_rng(n).standard_normal((n, channels)) + 0.05
    piped, pieces, (starts, whole, seconds) = piped_and_whole(model, monkeypatch, wav_bytes(x, rate, subtype),
                                                              hop=0.3)
    assert piped.starts == starts and piped.seconds == seconds == -(-n * RATE // rate) / RATE
    for a, b in zip(pieces, whole, strict=True):
        assert np.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_live_streams_trailing_chunks_and_declared_sizes(model, monkeypatch):
    """A live stream (sizes 0xFFFFFFFF) is read to its end; a declared data size is honoured, so
    a LIST chunk after the audio is not decoded as samples (soundfile does not decode it either)."""
    x = (0.1 * np.random.default_rng(1).standard_normal(9_000)).astype(np.float32)
    trailer = b"LIST\x0c\x00\x00\x00INFOISFT\x00\x00\x00\x00"
    for data in (wav_bytes(x, RATE, live=True), wav_bytes(x, RATE, trailer=trailer)):
        piped, pieces, (starts, whole, seconds) = piped_and_whole(model, monkeypatch, data)
        assert piped.starts == starts == [0, 4000, 5000] and seconds == piped.seconds == 9000 / RATE
        assert all(np.array_equal(a, b) for a, b in zip(pieces, whole, strict=True))


class Recorder(io.RawIOBase):
    """A pipe that counts the bytes read from it."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), len(self.data) - self.pos)
        b[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n


def test_piped_windows_are_classified_before_the_stream_ends(model, monkeypatch):
    """The key promise: predict classifies a piped recording's windows while it is still being
    read: the first batch once the first read block (65,536 frames of 4 bytes) is in, not after
    the stream's end (1.9 MB, 60 s), as when stdin was read whole; and the windows are the
    whole-file path's."""
    x = (0.1 * np.random.default_rng(3).standard_normal(60 * RATE) + 0.02).astype(np.float32)
    data = wav_bytes(x, RATE, live=True)
    pipe = Recorder(data)
    set_stdin(monkeypatch, pipe)
    read_at_run = []
    real_run = model.run
    monkeypatch.setattr(model, "run", lambda batch: read_at_run.append(pipe.pos) or real_run(batch))
    (p,) = predict_files(model, ["-"], batch_size=4)
    block, header, io_buffer = 65_536 * 4, 80, io.DEFAULT_BUFFER_SIZE
    assert len(data) == 1_920_080 and len(read_at_run) == 30
    assert read_at_run[0] <= header + block + io_buffer
    assert sum(pos < len(data) for pos in read_at_run) == 28  # the 112 windows before the last block
    assert p.error is None and p.starts == [0.5 * i for i in range(120)] and p.seconds == 60.0
    want = softmax(np.stack([expected_logits(x[s:s + 4000]) for s in range(0, len(x), 4000)]))
    assert np.allclose(p.window_probabilities, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("data, message", [
    (b"", "stdin: not a WAV stream (no RIFF/WAVE header)"),
    (b"RIFF\xff\xff\xff\xffWAVEfmt \x10\x00\x00", "stdin: the WAV stream ended before its audio data"),
    (b"fLaC" + b"\x00" * 100, "stdin: not a WAV stream (no RIFF/WAVE header)"),
    (wav_bytes(np.zeros(0, np.float32), RATE), "stdin: the clip has no samples"),
    (wav_bytes(np.array([0.1, np.nan] * 40_000, np.float32), RATE), "stdin: the stream holds NaN or infinite"),
    (wav_bytes(np.zeros(100, np.float32), RATE, "PCM_U8"), "stdin: WAV format 1 with 8-bit samples")],
    # named: a float WAV's PEAK chunk holds the time it was written, and xdist's workers must collect equal ids
    ids=["empty", "truncated header", "FLAC", "no samples", "NaN", "8-bit"])
def test_a_bad_stream_is_its_own_error(model, tmp_path, monkeypatch, data, message):
    """Unreadable or cut-short stdin is that input's error; the file after it is classified."""
    x = np.full(4000, 0.1, np.float32)
    sf.write(str(tmp_path / "good.wav"), x, RATE, subtype="FLOAT")
    set_stdin(monkeypatch, data)
    bad, good = predict_files(model, ["-", tmp_path / "good.wav"], batch_size=3)
    assert bad.error.startswith(message) and bad.to_dict() == {"file": "-", "error": bad.error}
    assert good.error is None and good.starts == [0.0]


def write_good_and_bad(tmp_path):
    rng = np.random.default_rng(9)
    sf.write(str(tmp_path / "a.wav"), (0.1 * rng.standard_normal(9000) + 0.1).astype(np.float32), RATE,
             subtype="FLOAT")
    sf.write(str(tmp_path / "c.wav"), (0.1 * rng.standard_normal(4000) - 0.1).astype(np.float32), RATE,
             subtype="FLOAT")
    (tmp_path / "b.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage, not audio")
    return [tmp_path / n for n in ("a.wav", "b.wav", "c.wav")]


def check_two_results_and_an_error_row(tmp_path, model_path, files, error):
    """The table, the JSON and the CSV each hold the two results and the one error, exit 1."""
    args = ("predict", str(model_path), *map(str, files))
    table = run_cli_here(*args, "--csv", str(tmp_path / "out.csv"))
    assert table.returncode == 1 and "Traceback" not in table.stdout + table.stderr
    errors = [line for line in table.stderr.splitlines() if line.startswith("edgeasc: error:")]
    assert errors == [f"edgeasc: error: {error}"], table.stderr
    rows = [line.split() for line in table.stdout.splitlines() if "wav" in line]
    assert rows == [[str(files[0]), "1.1", "3", "up", "87.7", "%"], [str(files[1]), "error"],
                    [str(files[2]), "0.5", "1", "down", "87.8", "%"]], table.stdout
    got = list(csv.DictReader((tmp_path / "out.csv").open()))
    assert [(r["file"], r["window_start"], r["error"]) for r in got] == [
        (str(files[0]), "0.000", ""), (str(files[0]), "0.500", ""), (str(files[0]), "0.625", ""),
        (str(files[0]), "all", ""), (str(files[1]), "", error), (str(files[2]), "0.000", ""),
        (str(files[2]), "all", "")]
    as_json = run_cli_here(*args, "--json")
    assert as_json.returncode == 1
    results = json.loads(as_json.stdout)
    assert [r["file"] for r in results] == list(map(str, files)) and results[1] == {"file": str(files[1]),
                                                                                    "error": error}
    assert [r["top"][0]["label"] for r in (results[0], results[2])] == ["up", "down"]
    assert [len(r["windows"]) for r in (results[0], results[2])] == [3, 1]
    return results


def test_a_corrupt_file_between_two_good_ones_is_one_error_row(tmp_path):
    model_path = write_model(tmp_path / "toy.onnx")
    files = write_good_and_bad(tmp_path)
    results = check_two_results_and_an_error_row(tmp_path, model_path, files,
                                                 f"{files[1]}: cannot read audio (Error opening '{files[1]}': "
                                                 "Error in WAV/W64/RF64 file. Malformed 'fmt ' chunk.)")
    assert set(results[0]["probabilities"]) == set(LABELS)


def test_running_out_of_memory_on_one_input_is_that_inputs_error_row(tmp_path, monkeypatch):
    """A MemoryError while one input is read (here: b.wav, a good file this time) loses that
    input only; one while a batch is classified, only the inputs with windows in it."""
    model_path = write_model(tmp_path / "toy.onnx")
    files = write_good_and_bad(tmp_path)
    sf.write(str(files[1]), np.zeros(4000, np.float32), RATE, subtype="FLOAT")
    real = predict_module.stream_windows

    def stream_windows(model, path, *args):
        if str(path).endswith("b.wav"):
            raise MemoryError
        return real(model, path, *args)

    monkeypatch.setattr(predict_module, "stream_windows", stream_windows)
    check_two_results_and_an_error_row(tmp_path, model_path, files, f"{files[1]}: out of memory")
    monkeypatch.setattr(predict_module, "stream_windows", real)
    model = load_model(model_path)
    real_run = model.run
    calls = []

    def run(batch):
        calls.append(len(batch))
        if len(calls) == 2:
            raise MemoryError
        return real_run(batch)

    monkeypatch.setattr(model, "run", run)
    a, b, c = predict_files(model, files, batch_size=2)  # batches: a a | a b | c
    assert calls == [2, 2, 1]
    assert (a.error, b.error, c.error) == (f"{files[0]}: out of memory while classifying",
                                           f"{files[1]}: out of memory while classifying", None)
