"""Mutation round 4 (docs/mutation.md): the cases mutmut showed the module tests left open in
the round's new modules: macro accuracy and device groups, the --events state machine, the
bounded latency quantiles, impulse-response loading/convolution and CP-Mobile's counts."""

import math

import pytest

from edgeasc.runtime.scores import scores


# ----------------------------------------------------------------------------- runtime/scores.py
def test_a_device_with_clips_but_no_correct_count_scores_zero():
    # a device-side evaluation leaves out devices it got nothing right on: 0 correct, not 1
    r = scores([[1, 1], [0, 2]], ["p", "q"], {"a": 3}, {"a": 3, "s2": 1, "s6": 4})
    assert r["per_device"] == {"a": 1.0, "s2": 0.0, "s6": 0.0}
    assert r["device_groups"] == {"real": 1.0, "seen": 0.0, "unseen": 0.0}


def test_a_confusion_of_the_wrong_size_says_what_it_must_be():
    with pytest.raises(ValueError, match=r"^a 2-class confusion matrix is 2 × 2$"):
        scores([[1, 0], [0, 1, 0]], ["p", "q"], {}, {})
    with pytest.raises(ValueError, match=r"^a 3-class confusion matrix is 3 × 3$"):
        scores([[1, 0, 0], [0, 1, 0]], ["p", "q", "r"], {}, {})


# ----------------------------------------------------------------------------- runtime/events.py
def events_of(tracker, windows):
    """windows: (start, label, probability); the events, whole."""
    return [e for e in (tracker.update(*w) for w in windows) if e is not None]


def test_the_option_bounds_are_inclusive_and_the_refusals_name_the_option():
    from edgeasc.errors import ConfigError
    from edgeasc.runtime.events import SceneTracker

    assert SceneTracker(threshold=1.0, hold=10_000).hold == 10_000  # both upper bounds are allowed
    with pytest.raises(ConfigError, match=r"^--threshold must be a probability in \(0, 1\], got 1.5$"):
        SceneTracker(threshold=1.5)
    with pytest.raises(ConfigError, match=r"^--hold must be between 1 and 10000 windows, got 0$"):
        SceneTracker(hold=0)


def test_a_stream_that_starts_late_counts_undecided_time_from_its_first_window():
    from edgeasc.runtime.events import UNDECIDED, SceneTracker

    t = SceneTracker(threshold=0.5, hold=2)
    found = events_of(t, [(5.0, "a", 0.4), (6.0, "a", 0.9), (7.0, "b", 0.9), (8.0, "b", 0.9)])
    assert [(e.start, e.label, e.previous, e.windows) for e in found] == [(7.0, "b", None, 2)]
    assert found[0].probability == pytest.approx(0.9)
    assert t.time_per_scene(10.0) == {"b": 3.0, UNDECIDED: 2.0}  # 5..7 undecided, not 0..7


def test_a_scene_seen_twice_adds_its_spans_and_the_order_is_largest_first():
    from edgeasc.runtime.events import SILENCE, SceneTracker

    t = SceneTracker(threshold=0.5, hold=1)
    found = events_of(t, [(0.0, "z", 0.9), (1.0, "b", 0.8), (4.0, "z", 0.7), (6.0, SILENCE, None), (7.0, "b", 0.6)])
    assert [(e.label, e.previous, e.windows) for e in found] == [
        ("z", None, 1), ("b", "z", 1), ("z", "b", 1), (SILENCE, "z", 1), ("b", SILENCE, 1)]
    assert found[3].probability is None
    # z: 0-1 and 4-6 = 3 s; b: 1-4 and 7-8 = 4 s (closed plus the open span); silence: 6-7
    totals = t.time_per_scene(8.0)
    assert totals == {"b": 4.0, "z": 3.0, SILENCE: 1.0} and list(totals) == ["b", "z", SILENCE]
    tie = SceneTracker(threshold=0.5, hold=1)
    events_of(tie, [(0.0, "y", 0.9), (2.0, "x", 0.9)])
    assert list(tie.time_per_scene(4.0)) == ["x", "y"]  # equal time: by name


def test_no_time_is_counted_before_the_first_window_or_at_its_own_start():
    from edgeasc.runtime.events import SceneTracker

    assert SceneTracker().time_per_scene(5.0) == {}  # nothing fed: no span, whatever the end
    t = SceneTracker(threshold=0.5, hold=1)
    events_of(t, [(3.0, "a", 0.9)])
    assert t.time_per_scene(3.0) == {}  # a span of 0 s is no entry
    assert t.time_per_scene(4.5) == {"a": 1.5}


# ----------------------------------------------------------------------------- runtime/stats.py
@pytest.mark.parametrize("low, high, ratio", [(0.0, 1.0, 1.02), (1.0, 1.0, 1.02), (1.0, 2.0, 1.0), (2.0, 1.0, 1.02)])
def test_a_histogram_without_a_range_or_a_ratio_is_refused(low, high, ratio):
    from edgeasc.runtime.stats import LogHistogram

    with pytest.raises(ValueError, match=r"^LogHistogram needs 0 < low < high and ratio > 1$"):
        LogHistogram(low, high, ratio)


def test_zero_and_negative_latencies_land_in_the_lowest_bin():
    from edgeasc.runtime.stats import LogHistogram

    for odd in (0.0, -2.0):
        h = LogHistogram()
        h.add(odd)
        h.add(5.0)
        assert h.counts[0] == 1 and h.counts.sum() == 2
        # rank 0 is the lowest bin's centre (the exact min is below it: no clamp applies)
        assert h.quantile(0.0) == math.exp(math.log(1e-3) + 0.5 * math.log(1.02))
        assert (h.min, h.max) == (odd, 5.0)


def test_the_most_common_labels_are_by_count_then_by_name():
    from edgeasc.runtime.stats import WindowStats

    s = WindowStats()
    for label, n in (("tram", 2), ("bus", 5), ("park", 2), ("metro", 1), ("airport", 2)):
        for _ in range(n):
            s.add(label, 1.0)
    s.add(None, 1.0)
    assert s.most_common() == [("bus", 5), ("airport", 2), ("park", 2)]
    assert s.most_common(5) == [("bus", 5), ("airport", 2), ("park", 2), ("tram", 2), ("metro", 1)]
    assert WindowStats().most_common() == []


# ----------------------------------------------------------------------------- data/impulse.py
def write_response(path, samples, sr):
    import numpy as np
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(samples, dtype=np.float32), sr, subtype="FLOAT")
    return path


def dir_error(folder, rate=22050):
    from edgeasc.data.dcase import DatasetError
    from edgeasc.data.impulse import load_impulse_responses

    with pytest.raises(DatasetError) as exc:
        load_impulse_responses(folder, rate)
    return str(exc.value)


def test_responses_at_the_edges_are_read_or_refused_with_their_reason(tmp_path):
    import numpy as np

    from edgeasc.data.impulse import load_impulse_responses

    # one sample (a scaled delta) and exactly MAX_IR_SECONDS are responses
    write_response(tmp_path / "ok" / "delta.wav", [0.5], 22050)
    write_response(tmp_path / "ok" / "two_s.wav", np.r_[1.0, np.zeros(15_999)], 8000)
    (name_d, delta), (name_2, two) = load_impulse_responses(tmp_path / "ok", 22050)
    assert (name_d, delta.tolist(), name_2, two.shape) == ("delta.wav", [0.5], "two_s.wav", (44_100,))
    # read at the run's rate (8 kHz -> 16 kHz doubles it), mono as the mean of a stereo file's channels
    write_response(tmp_path / "rate" / "ir.wav", np.r_[1.0, np.zeros(79)], 8000)
    assert load_impulse_responses(tmp_path / "rate", 16000)[0][1].shape == (160,)
    write_response(tmp_path / "stereo" / "ir.wav", [[0.5, 0.25], [0.0, 0.5]], 22050)
    assert load_impulse_responses(tmp_path / "stereo", 22050)[0][1].tolist() == [0.375, 0.25]
    write_response(tmp_path / "empty" / "ir.wav", np.zeros(0), 22050)
    assert dir_error(tmp_path / "empty") == f"{tmp_path / 'empty' / 'ir.wav'}: holds no audio (an impulse response " \
                                            "for --dir-folder)"
    (tmp_path / "file.wav").write_bytes(b"")
    assert dir_error(tmp_path / "file.wav") == f"{tmp_path / 'file.wav'}: not a folder (--dir-folder)"
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("x")
    assert dir_error(tmp_path / "text").startswith(f"{tmp_path / 'text'}: no audio files (.wav, .flac, .ogg")
    assert dir_error(tmp_path / "text").endswith(") among its 1 file(s)")


def test_a_folder_that_cannot_be_listed_says_why(tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    def unlistable(self, pattern):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(Path, "rglob", unlistable)
    assert dir_error(tmp_path) == f"{tmp_path}: cannot list the folder (Input/output error)"


def test_the_fft_size_never_wraps_the_full_convolution_onto_the_clip():
    import numpy as np

    from edgeasc.data.impulse import convolve_ir

    # n + k - 1 = 1025: one sample past a power of two; a 1024-point FFT would add the full
    # convolution's last sample to the first
    x = np.random.default_rng(3).standard_normal((2, 1000)).astype(np.float32)
    ir = np.random.default_rng(4).standard_normal(26).astype(np.float32)
    got = convolve_ir(x, ir)
    for c in range(2):
        np.testing.assert_allclose(got[c], np.convolve(x[c], ir)[:1000], atol=2e-5)
    assert convolve_ir(np.array([[2.0]], np.float32), np.array([0.5], np.float32)).tolist() == [[1.0]]


def test_the_refusal_without_devices_is_one_whole_sentence():
    from edgeasc.data.dcase import DatasetError
    from edgeasc.data.impulse import check_devices

    with pytest.raises(DatasetError) as exc:
        check_devices([None], "/irs")
    assert str(exc.value) == ("--dir-folder /irs: the training set has no device information (DIR convolves the "
                              "clips of the reference device 'a': a DCASE Mobile layout or DCASE-style file names)")
