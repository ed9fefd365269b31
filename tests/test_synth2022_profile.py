"""The synthetic TAU 2022 Mobile profile's plan pinned exactly against its declared constants:
which cities evaluate only (stockholm, vienna) and which are in both splits (paris, prague),
which device hears which recording (training: a, a, then b, c, s1, s2, s3 in rotation;
evaluate: one seen and one unseen device, every one of the 18 pairs once per 18 recordings),
locations, segments, file names and the nested train subsets."""

from collections import Counter

import numpy as np
import pytest

from edgeasc.data import synth2022 as s22
from edgeasc.data.synth import CITIES, SCENES, SynthError

PAIRS = [(seen, unseen) for seen in s22.SEEN for unseen in s22.UNSEEN]


def test_the_declared_constants():
    assert s22.TRAIN_CITIES == ("barcelona", "helsinki", "lisbon", "london", "lyon", "milan", "paris", "prague")
    assert s22.EVALUATE_CITIES == ("paris", "prague", "stockholm", "vienna")
    assert CITIES[8:] == ("stockholm", "vienna")  # the evaluate-only ones
    assert s22.SEEN == ("a", "b", "c", "s1", "s2", "s3") and s22.UNSEEN == ("s4", "s5", "s6")
    assert [d.name for d in s22.DEVICES] == [*s22.SEEN, *s22.UNSEEN]
    assert (s22.SAMPLE_RATE, s22.SUBSEGMENTS, s22.SEGMENTS_PER_LOCATION, s22.EVALUATE_FRACTION) == (44_100, 10, 2, 0.3)
    assert (s22.BORROW, s22.DEFAULT_CLIPS_PER_CLASS) == (0.5, 500)


def test_cities_per_split_exactly():
    recs = s22.plan_recordings(500, seed=0)
    assert len(recs) == 380  # 10 scenes x 19 locations x 2 segments
    assert dict(Counter((r.split, r.city) for r in recs)) == {
        ("evaluate", "paris"): 22, ("evaluate", "prague"): 24, ("evaluate", "stockholm"): 42,
        ("evaluate", "vienna"): 32, ("train", "barcelona"): 34, ("train", "helsinki"): 38, ("train", "lisbon"): 26,
        ("train", "london"): 32, ("train", "lyon"): 38, ("train", "milan"): 34, ("train", "paris"): 28,
        ("train", "prague"): 30}
    train = {r.city for r in recs if r.split == "train"}
    evaluate = {r.city for r in recs if r.split == "evaluate"}
    assert evaluate - train == {"stockholm", "vienna"} and evaluate & train == {"paris", "prague"}
    # the smallest profile: 4 locations per scene, one of them evaluates; its cities and locations
    small = [(r.scene, r.city, r.location) for r in s22.plan_recordings(40, seed=0) if r.split == "evaluate"]
    assert small[::2] == [("airport", "prague", 1001), ("bus", "stockholm", 1005), ("metro", "paris", 1010),
                          ("metro_station", "prague", 1014), ("park", "stockholm", 1018),
                          ("public_square", "paris", 1023), ("shopping_mall", "stockholm", 1024),
                          ("street_pedestrian", "stockholm", 1031), ("street_traffic", "prague", 1033),
                          ("tram", "prague", 1036)]
    assert small[1::2] == small[::2]  # two segments per location


def test_which_device_hears_which_recording():
    recs = s22.plan_recordings(500, seed=0)
    train = [r for r in recs if r.split == "train"]
    evaluate = [r for r in recs if r.split == "evaluate"]
    assert [r.devices for r in train[:18]] == [
        ("a",), ("a",), ("b",), ("a",), ("a",), ("c",), ("a",), ("a",), ("s1",), ("a",), ("a",), ("s2",),
        ("a",), ("a",), ("s3",), ("a",), ("a",), ("b",)]
    assert dict(Counter(r.devices[0] for r in train)) == {"a": 174, "b": 18, "c": 17, "s1": 17, "s2": 17, "s3": 17}
    assert [r.devices for r in evaluate[:7]] == [("a", "s4"), ("b", "s5"), ("c", "s6"), ("s1", "s4"), ("s2", "s5"),
                                                 ("s3", "s6"), ("a", "s5")]
    for start in range(0, 108, 18):  # every seen/unseen pair exactly once in each run of 18
        assert sorted(r.devices for r in evaluate[start:start + 18]) == sorted(PAIRS)
    counts = Counter(r.devices for r in evaluate)
    assert len(evaluate) == 120 and sorted(counts.values()) == [6] * 6 + [7] * 12 and set(counts) == set(PAIRS)


def test_locations_segments_and_names():
    recs = s22.plan_recordings(40, seed=3)
    assert [r.index for r in recs] == list(range(80))
    assert [r.segment for r in recs] == list(range(10000, 10080))
    assert [r.location for r in recs] == [1000 + i // 2 for i in range(80)]
    assert [r.scene for r in recs] == [s for s in SCENES for _ in range(8)]
    for scene in SCENES:  # 4 locations, exactly one evaluates
        assert Counter(r.split for r in recs if r.scene == scene) == {"train": 6, "evaluate": 2}
    rec = next(r for r in recs if r.split == "evaluate")
    assert rec.identifier == f"{rec.city}-{rec.location}"
    assert rec.filename(3, "s5") == f"audio/{rec.scene}-{rec.city}-{rec.location}-{rec.segment}-3-s5.wav"
    clips = rec.clips()
    assert len(clips) == 20 and clips[0] == (rec.filename(0, rec.devices[0]), rec.devices[0])
    assert clips[10] == (rec.filename(0, rec.devices[1]), rec.devices[1]) and clips[19][0].endswith(
        f"-9-{rec.devices[1]}.wav")
    assert len(s22.plan_recordings(1, seed=0)) == 80  # at least 4 locations per scene
    assert len(s22.plan_recordings(27, seed=0)) == 80 and len(s22.plan_recordings(130, seed=0)) == 100
    with pytest.raises(SynthError) as refused:
        s22.plan_recordings(0)
    assert str(refused.value) == "--clips-per-class must be positive, got 0"


def test_train_subsets_take_the_ceiling_of_each_scenes_share():
    recs = s22.plan_recordings(500, seed=0)
    subsets = s22.train_subsets(recs, seed=0)
    per_scene = Counter(r.scene for r in recs if r.split == "train")
    for percent, subset in subsets.items():
        got = Counter(r.scene for r in subset)
        assert got == {s: max(1, -(-percent * n // 100)) for s, n in per_scene.items()}, percent
        assert [r.index for r in subset] == sorted(r.index for r in subset)
    assert s22.train_subsets(recs, seed=0) == subsets and s22.train_subsets(recs, seed=1) != subsets
    small = s22.train_subsets(s22.plan_recordings(40, seed=0), seed=0)
    assert {p: len(v) for p, v in small.items()} == {5: 10, 10: 10, 25: 20, 50: 30, 100: 60}
    assert [r.index for r in small[5]] == [0, 14, 23, 30, 39, 43, 55, 58, 71, 75]


def test_device_gain_at_its_own_landmarks():
    a, b = s22.DEVICES[0], s22.DEVICES[1]
    f = np.array([1000.0, 2500.0, 10.0])
    # a: flat band 20 Hz - 20 kHz, no tilt, no resonance
    assert a.gain(f)[0] == pytest.approx(s22.band(20, 20000, 1.0)(np.array([1000.0]))[0], rel=1e-12)
    # b: +3 dB at its 2.5 kHz resonance, -1 dB per octave around 1 kHz: 2.5 kHz is 1.32 octaves up
    db = 20 * np.log10(b.gain(f) / s22.band(150, 9000, 1.0)(np.maximum(f, 20.0)))
    assert db[1] == pytest.approx(3.0 - np.log2(2.5), abs=1e-9)
    assert db[0] == pytest.approx(3.0 * np.exp(-0.5 * (np.log2(1000 / 2500) * 2) ** 2), abs=1e-9)
    assert b.gain(np.array([10.0]))[0] == b.gain(np.array([20.0]))[0]  # below 20 Hz: as at 20 Hz
    assert b.gain(np.array([20.0]))[0] != b.gain(np.array([20.5]))[0]


def test_a_recording_is_heard_deterministically_per_device():
    rec = next(r for r in s22.plan_recordings(40, seed=0) if r.split == "evaluate")
    heard = s22.synthesize_recording(rec, seed=0)
    again = s22.synthesize_recording(rec, seed=0)
    assert list(heard) == list(rec.devices) == ["a", "s4"]
    assert all(np.array_equal(heard[d], again[d]) and heard[d].dtype == np.float32 for d in heard)
    assert not np.array_equal(heard["a"], s22.synthesize_recording(rec, seed=1)["a"])
    for x in heard.values():  # a level of -32 to -20 dBFS RMS
        assert -32 - 1e-6 <= 20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2))) <= -20 + 1e-6


# (recording, device) -> RMS and the samples at 0, 1000, 220500, 440999 (seed 0, smallest profile)
GOLDEN = {
    (0, "a"): (0.05498400970362067, [0.04087148234248161, 0.0314447320997715, -0.060010284185409546,
                                     0.07424318790435791]),
    (1, "a"): (0.05211123214334526, [0.008401735685765743, -0.02692839503288269, 0.04670003801584244,
                                     0.014581172727048397]),
    (2, "a"): (0.054347603954625755, [0.0017620340222492814, 0.04705685377120972, 0.033722493797540665,
                                      0.01134544238448143]),
    (2, "s4"): (0.07822488912729304, [-0.02063075825572014, 0.060515426099300385, 0.09286604821681976,
                                      -0.01906788907945156]),
    (3, "b"): (0.039366741264801344, [-0.010352606885135174, -0.014284881763160229, -0.005693661980330944,
                                      -0.012337886728346348]),
    (3, "s5"): (0.0572619428688669, [0.07324615120887756, -0.0561053492128849, 0.029703782871365547,
                                     0.07318655401468277]),
    (8, "a"): (0.08256088920937268, [0.09397583454847336, 0.12233290076255798, 0.07184302806854248,
                                     0.09396044909954071]),  # one that borrows another scene's source
}


def test_the_synthesised_audio_is_pinned():
    """A regression pin: the same (seed, recording) gives the same audio in every version, so
    a benchmark on the profile stays comparable. Any change to the synthesis fails here."""
    recs = s22.plan_recordings(40, seed=0)
    for index in (0, 1, 2, 3, 8):
        for device, x in s22.synthesize_recording(recs[index], seed=0).items():
            rms, samples = GOLDEN[(index, device)]
            assert float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) == pytest.approx(rms, rel=1e-5)
            assert x[[0, 1000, 220500, 440999]].tolist() == pytest.approx(samples, rel=1e-4, abs=1e-7)


@pytest.mark.parametrize("name, peak, samples", [
    ("a", 0.06262570750020631, [5.640972642300588e-06, -0.0009068977158185531, 0.05668001995019403]),
    ("s5", 0.051267595127931324, [0.00013451325096289587, -0.0034785201405472155, 0.05088404571810099]),
    ("s6", 0.05506649116599908, [0.0006757197582189664, -0.0027780609904361213, 0.05343839197729248]),
])
def test_hear_is_pinned_for_a_linear_and_two_clipping_devices(name, peak, samples):
    tone = 3 * np.sin(2 * np.pi * 440 * np.arange(44100) / 44100)
    y = s22.hear(s22._BY_NAME[name], tone, np.random.default_rng(7))
    assert float(np.sqrt(np.mean(y ** 2))) == pytest.approx(0.04423168606206163, rel=1e-9)  # the drawn level
    assert float(np.abs(y).max()) == pytest.approx(peak, rel=1e-6)
    assert y[[0, 100, 30000]].tolist() == pytest.approx(samples, rel=1e-6, abs=1e-9)


def test_the_default_seed_is_0():
    recs = s22.plan_recordings(40)
    assert recs == s22.plan_recordings(40, seed=0) and s22.train_subsets(recs) == s22.train_subsets(recs, seed=0)
    heard, seeded = s22.synthesize_recording(recs[1]), s22.synthesize_recording(recs[1], seed=0)
    assert heard.keys() == seeded.keys() and all(np.array_equal(heard[d], seeded[d]) for d in heard)
