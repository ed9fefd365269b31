"""The synthetic TAU 2022 Mobile profile: layout, device split, clip lengths, train subsets,
and the data-driven clip length downstream (1-s features, MACs per second)."""

import json
from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from conftest import assert_one_line_error, run_cli_here
from edgeasc.data.cache import probe_clip_seconds
from edgeasc.data.dcase import open_dataset, parse_clip_name
from edgeasc.data.synth import CITIES, SCENES
from edgeasc.data.synth2022 import (
    DEVICES,
    SEEN,
    SUBSEGMENTS,
    UNSEEN,
    hear,
    plan_recordings,
    synthesize_recording,
    train_subsets,
)


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    """The smallest profile (4 locations per scene), written by the real CLI."""
    root = tmp_path_factory.mktemp("p22") / "data"
    proc = run_cli_here("synth", str(root), "--profile", "dcase2022", "--clips-per-class", "40", "--json")
    assert proc.returncode == 0, proc.stderr
    return root, json.loads(proc.stdout)


def test_plan_device_split_and_locations():
    recs = plan_recordings(500, seed=0)
    train = [r for r in recs if r.split == "train"]
    evaluate = [r for r in recs if r.split == "evaluate"]
    assert {d for r in train for d in r.devices} == set(SEEN)  # s4-s6 never trained on
    assert all(len(r.devices) == 1 for r in train)
    assert Counter(r.devices[0] for r in train)["a"] == sum(1 for i in range(len(train)) if i % 3 != 2)
    for r in evaluate:  # one seen and one unseen device hear every evaluate recording
        assert len(r.devices) == 2 and r.devices[0] in SEEN and r.devices[1] in UNSEEN
    per_device = Counter(d for r in evaluate for d in r.devices)
    assert set(per_device) == set(SEEN) | set(UNSEEN)
    assert max(per_device[d] for d in UNSEEN) - min(per_device[d] for d in UNSEEN) <= 1
    assert max(per_device[d] for d in SEEN) - min(per_device[d] for d in SEEN) <= 1
    assert {r.location for r in train}.isdisjoint({r.location for r in evaluate})
    assert len({r.segment for r in recs}) == len(recs)
    eval_only = {r.city for r in evaluate} - {r.city for r in train}
    assert eval_only == {"stockholm", "vienna"} and {r.city for r in recs} <= set(CITIES)
    for scene in SCENES:  # ~30 % of every scene's locations evaluate
        locs = {(r.location, r.split) for r in recs if r.scene == scene}
        assert sum(s == "evaluate" for _, s in locs) == round(0.3 * len(locs))
    assert plan_recordings(500, seed=0) == recs and plan_recordings(500, seed=1) != recs


def test_train_subsets_are_nested_whole_recordings_with_every_scene():
    recs = plan_recordings(500, seed=0)
    subsets = train_subsets(recs, seed=0)
    assert list(subsets) == [5, 10, 25, 50, 100]
    previous: set = set()
    for subset in subsets.values():
        assert {r.scene for r in subset} == set(SCENES) and all(r.split == "train" for r in subset)
        assert previous <= set(subset)
        previous = set(subset)
    assert set(subsets[100]) == {r for r in recs if r.split == "train"}
    per_scene = sum(1 for r in recs if r.split == "train" and r.scene == "bus")
    assert sum(1 for r in subsets[25] if r.scene == "bus") == -(-25 * per_scene // 100)


def test_devices_are_distinct_filters_with_their_own_noise():
    f = np.fft.rfftfreq(44100, 1 / 44100)
    responses = np.stack([d.gain(f) for d in DEVICES])
    for i in range(len(DEVICES)):
        for j in range(i + 1, len(DEVICES)):
            db = 20 * np.log10(responses[i, 100:16000] / responses[j, 100:16000])
            assert np.abs(db).max() > 3, (DEVICES[i].name, DEVICES[j].name)
    by_name = {d.name: d for d in DEVICES}
    tone = np.sin(2 * np.pi * 1000 * np.arange(44100) / 44100)

    def noise_db(name):  # power away from the tone, relative to all of it
        spec = np.abs(np.fft.rfft(hear(by_name[name], tone, np.random.default_rng(1)))) ** 2
        return 10 * np.log10(spec[np.abs(f - 1000) > 50].sum() / spec.sum())

    assert noise_db("s4") - noise_db("a") > 15  # 36 dB vs 65 dB of self-noise
    rec = next(r for r in plan_recordings(40, seed=0) if r.split == "evaluate")
    heard = synthesize_recording(rec, seed=0)
    assert set(heard) == set(rec.devices) and all(x.shape == (SUBSEGMENTS * 44100,) for x in heard.values())
    a, b = heard.values()
    assert abs(np.corrcoef(a, b)[0, 1]) > 0.1  # the same scene through two devices, not two scenes


@pytest.fixture(scope="module")
def short_profile(tmp_path_factory):
    """The smallest profile written by the real CLI (4 locations per scene), with 2 one-second pieces
    per recording instead of 10: the same layout and files, a fifth of the audio to synthesise."""
    from edgeasc.data import synth2022

    root = tmp_path_factory.mktemp("p22s") / "data"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(synth2022, "SUBSEGMENTS", 2)  # 4 locations per scene still (the floor)
        proc = run_cli_here("synth", str(root), "--profile", "dcase2022", "--clips-per-class", "4", "--workers", "1",
                            "--json")  # in this process: spawned workers would not see the patch
    assert proc.returncode == 0, proc.stderr
    return root, json.loads(proc.stdout)


def test_profile_layout_clip_lengths_and_split_files(short_profile):
    root, summary = short_profile
    assert summary["classes"] == 10 and summary["seconds"] == 1.0 and summary["sample_rate"] == 44100
    assert summary["seen_devices"] == list(SEEN) and summary["unseen_devices"] == list(UNSEEN)
    assert (root / "meta.csv").read_text().splitlines()[0] == "filename\tscene_label\tidentifier\tsource_label"
    assert (root / "split_setup" / "test.csv").read_text().splitlines()[0] == "filename"
    assert (root / "evaluation_setup" / "fold1_evaluate.csv").read_text().startswith("filename\tscene_label\n")
    ds = open_dataset(root)
    assert ds.layout == "tau2022-mobile" and ds.labels == sorted(SCENES)
    assert len(list((root / "audio").iterdir())) == summary["train"] + summary["evaluate"]  # no stray clips
    assert (len(ds.splits["train"]), len(ds.splits["evaluate"])) == (summary["train"], summary["evaluate"])
    assert {c.device for c in ds.splits["train"]} == set(SEEN)
    assert {c.device for c in ds.splits["evaluate"]} == set(SEEN) | set(UNSEEN)
    for clip in ds.splits["train"][::97] + ds.splits["evaluate"][::97]:
        info = sf.info(str(clip.path))
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (44100, 1, 44100, "PCM_24")
        location, device = parse_clip_name(clip.name)
        assert (location, device) == (clip.location, clip.device)
    assert probe_clip_seconds(ds) == 1.0
    for percent in (5, 10, 25, 50, 100):
        subset = open_dataset(root, split=percent)
        assert len(subset.splits["train"]) == summary["splits"][str(percent)]
        assert [c.name for c in subset.splits["evaluate"]] == [c.name for c in ds.splits["evaluate"]]


@pytest.mark.slow  # test_features_follow_the_clip_length_of_a_tau2022_folder guards it without the profile
def test_features_follow_the_data_clip_length(profile, tmp_path):
    """1-s clips give 1-s features (44 frames at 22 050 Hz, hop 512) without --seconds; --seconds
    overrides; MACs are counted per clip of that length."""
    root, _ = profile
    cache = ["--cache-dir", str(tmp_path / "c"), "--json", "--split", "5"]
    auto = json.loads(run_cli_here("features", str(root), *cache).stdout)
    assert auto["frames"] == 44 and auto["layout"] == "tau2022-mobile"
    longer = json.loads(run_cli_here("features", str(root), *cache, "--seconds", "2").stdout)
    assert longer["frames"] == 87


def test_synth_profile_bad_input_is_one_line(tmp_path):
    out = tmp_path / "x"
    assert_one_line_error(run_cli_here("synth", str(out), "--profile", "dcase2023"), 2, "--profile must be")
    assert_one_line_error(run_cli_here("synth", str(out), "--profile", "dcase2022", "--classes", "3"), 2, "10 classes")
    assert_one_line_error(run_cli_here("synth", str(out), "--profile", "dcase2022", "--seconds", "10"), 2, "1-s clips")
    assert_one_line_error(run_cli_here("synth", str(out), "--profile", "dcase2022", "--clips-per-class", "0"), 2,
                          "--clips-per-class must be positive")
    for profile in ("dcase2020", "dcase2022"):
        assert_one_line_error(run_cli_here("synth", str(out), "--profile", profile, "--seed", "-1"), 2, "--seed must be")
    assert not out.exists()


@pytest.fixture(scope="module")
def tau22(tmp_path_factory):
    """The official TAU 2022 layout in miniature (conftest.make_dcase: 3 scenes, 1-s mono clips
    at 44.1 kHz, devices a, b, s1): the fast stand-in for the synthesised profile downstream."""
    from conftest import make_dcase

    return make_dcase(tmp_path_factory.mktemp("tau22") / "data", "tau2022-mobile", seconds=1.0)


def test_features_follow_the_clip_length_of_a_tau2022_folder(tau22, tmp_path):
    """As test_features_follow_the_data_clip_length (slow), on the small layout: 44 frames from
    1-s clips without --seconds, 87 with --seconds 2."""
    cache = ["--cache-dir", str(tmp_path / "c"), "--json", "--split", "50"]
    auto = json.loads(run_cli_here("features", str(tau22), *cache).stdout)
    assert auto["frames"] == 44 and auto["layout"] == "tau2022-mobile"
    longer = json.loads(run_cli_here("features", str(tau22), *cache, "--seconds", "2").stdout)
    assert longer["frames"] == 87


def test_one_second_pipeline_on_a_tau2022_folder(tau22, tmp_path):
    """The downstream promise of test_one_second_pipeline_train_export_predict (slow: it needs the
    synthesised profile) on the small layout: a run on a train subset has 1-s features without
    --seconds, MACs per 1-s clip, devices reported seen/unseen and plotted; its int8 export
    calibrates on the subset's own cached clips (no second extraction); predict windows a 1-s
    clip as one window."""
    run, cache = tmp_path / "run", tmp_path / "cache"
    proc = run_cli_here("train", str(tau22), "--split", "50", "--preset", "demo", "--width", "8", "--prune-ratio", "0",
                        "--epochs", "1", "--batch-size", "4", "--feature-workers", "1", "--cache-dir", str(cache),
                        "--out", str(run), "--json", "--plots")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["seconds"] == 1.0
    final = summary["final"]
    ds = open_dataset(tau22, split=50)
    trained = sorted({c.device for c in ds.splits["train"]})
    assert final["seen_devices"] == trained
    assert sorted(final["unseen_devices"]) == sorted({c.device for c in ds.splits["evaluate"]} - set(trained))
    assert final["n"] == len(ds.splits["evaluate"]) == sum(final["device_counts"].values())  # test.csv: all of it
    assert_one_second_downstream(run, cache, summary, next((tau22 / "audio").glob("*-s1.wav")), tmp_path)


@pytest.mark.slow  # ~45 s on the synthesised profile; test_one_second_pipeline_on_a_tau2022_folder guards it
def test_one_second_pipeline_train_export_predict(profile, tmp_path):
    """Downstream at 1 s: a run on a TAU 2022 train subset has 1-s features, MACs per 1-s clip,
    seen/unseen devices and their plot; its int8 export calibrates on the subset's own cached
    clips (no second extraction); predict windows 1-s clips as one window."""
    root, written = profile
    run, cache = tmp_path / "run", tmp_path / "cache"
    proc = run_cli_here("train", str(root), "--split", "5", "--preset", "demo", "--width", "8", "--prune-ratio", "0",
                        "--epochs", "1", "--batch-size", "32", "--cache-dir", str(cache), "--out", str(run), "--json",
                        "--plots")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["seconds"] == 1.0
    final = summary["final"]
    trained = sorted({c.device for c in open_dataset(root, split=5).splits["train"]})
    assert final["seen_devices"] == trained and set(UNSEEN) <= set(final["unseen_devices"])  # the subset's own
    assert final["n"] == written["evaluate"] == sum(final["device_counts"].values())  # test.csv: all of evaluate
    assert_one_second_downstream(run, cache, summary, next((root / "audio").glob("*-s5.wav")), tmp_path)


def assert_one_second_downstream(run, cache, summary, clip, tmp_path):
    """What follows a 1-s run: the device plot, 1-s MACs in `info`, an int8 export calibrated on
    the run's own cached clips (no second extraction), and predict's one window per 1-s clip."""
    assert (run / "devices.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stats = json.loads(run_cli_here("info", str(run / "model-final.pt"), "--json").stdout)
    assert stats["seconds"] == 1.0 and stats["input_shape"][-1] == 44
    assert summary["macs"] == stats["macs"]
    features_dirs = sorted((cache / "features").iterdir())
    onnx = tmp_path / "m.onnx"
    proc = run_cli_here("export", str(run), "-o", str(onnx), "--precision", "int8", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["report"]["clip_seconds"] == 1.0
    assert report["report"]["macs_per_second"] == report["report"]["macs_per_clip"]
    assert sorted((cache / "features").iterdir()) == features_dirs  # calibrated from the run's own cache
    pred = json.loads(run_cli_here("predict", str(onnx), str(clip), "--json").stdout)
    assert len(pred[0]["windows"]) == 1 and pred[0]["windows"][0]["end"] == 1.0


def test_per_device_models_on_the_synthetic_profile(short_profile, tmp_path):
    """`finetune-devices` on the synthetic TAU 2022 profile: every seen device (a, b, c, s1-s3)
    gets its own seeded model from its own clips, the unseen ones (s4-s6) and unknown ids use the
    general model, and the same seed gives the same weights."""
    import shutil

    import torch

    from edgeasc.train.devices import model_for_device

    root, summary = short_profile
    run = tmp_path / "run"
    proc = run_cli_here("train", str(root), "--preset", "demo", "--width", "4", "--prune-ratio", "0", "--epochs", "1",
                        "--batch-size", "16", "--feature-workers", "1", "--cache-dir", str(tmp_path / "cache"),
                        "--out", str(run), "--json")
    assert proc.returncode == 0, proc.stderr
    again = tmp_path / "again"
    shutil.copytree(run, again)
    manifests = []
    for r in (run, again):
        proc = run_cli_here("finetune-devices", str(r), "--epochs", "1", "--lr", "1e-3", "--json")
        assert proc.returncode == 0, proc.stderr
        manifests.append(json.loads(proc.stdout))
    manifest = manifests[0]
    assert list(manifest["devices"]) == list(SEEN) and manifest["seed"] == 0
    train = [c for c in open_dataset(root).splits["train"]]
    for d, entry in manifest["devices"].items():
        assert entry["train_clips"] == sum(c.device == d for c in train) > 0, d
        assert model_for_device(run, d) == run / "devices" / d / "model-final.pt"
    for d in (*UNSEEN, "s10", "unknown"):
        assert model_for_device(run, d) == run / "model-final.pt"

    def weights(path):
        return torch.load(path, map_location="cpu", weights_only=True)["model"]

    general = weights(run / "model-final.pt")
    for d in SEEN:
        mine, twin = weights(run / "devices" / d / "model-final.pt"), weights(again / "devices" / d / "model-final.pt")
        assert all(torch.equal(mine[k], twin[k]) for k in mine), d  # seeded
        assert any(not torch.equal(mine[k], general[k]) for k in mine), d  # and fine-tuned
