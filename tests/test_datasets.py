"""Dataset layouts (exact official fixtures), plain layouts, and bad datasets."""

import pytest

from conftest import assert_one_line_error, make_dcase, run_cli, run_cli_here, write_wav
from edgeasc.data.dcase import DatasetError, open_dataset, parse_clip_name


@pytest.mark.parametrize("layout, scenes, labels", [
    ("dcase2018", ("airport", "bus", "park"), ["airport", "bus", "park"]),
    ("dcase2020-1b", ("airport", "bus", "park", "tram"), ["indoor", "outdoor", "transportation"]),
    ("tau2020-mobile", ("airport", "bus", "park"), ["airport", "bus", "park"]),
])
def test_official_layouts_are_detected_and_read(tmp_path, layout, scenes, labels):
    root = make_dcase(tmp_path / layout, layout, scenes)
    ds = open_dataset(root)
    assert ds.layout == layout
    assert ds.labels == labels
    assert len(ds.splits["train"]) == len(ds.splits["evaluate"]) == 2 * len(scenes)
    clip = ds.splits["train"][0]
    assert clip.path.is_file() and clip.path.is_relative_to(root.resolve())
    assert clip.location == "barcelona-0"
    train_locs = {c.location for c in ds.splits["train"]}
    assert train_locs.isdisjoint({c.location for c in ds.splits["evaluate"]})
    if layout == "tau2020-mobile":
        assert ds.devices == ["a", "b", "s1"]
    for c in ds.splits["evaluate"]:  # labels index the sorted label list
        assert ds.labels[c.label] in (c.name.split("/")[1].split("-")[0], "indoor", "outdoor", "transportation")


def test_parse_clip_name():
    assert parse_clip_name("audio/airport-barcelona-0-0-a.wav") == ("barcelona-0", "a")
    assert parse_clip_name("audio/street_traffic-lyon-1062-43203-s3.wav") == ("lyon-1062", "s3")
    assert parse_clip_name("my recording.wav") == (None, None)


def test_plain_folders_and_csv(tmp_path):
    for label in ("kitchen", "office"):
        for i in range(5):
            write_wav(tmp_path / "folders" / label / f"{i}.wav", seconds=0.2)
    ds = open_dataset(tmp_path / "folders")
    assert ds.layout == "folders" and ds.labels == ["kitchen", "office"]
    assert len(ds.splits["evaluate"]) == 2 and len(ds.splits["train"]) == 8  # every 5th per class
    root = tmp_path / "csv"
    for i in range(4):
        write_wav(root / "clips" / f"{i}.wav", seconds=0.2)
    (root / "labels.csv").write_text("filename,label,split\nclips/0.wav,a,train\nclips/1.wav,b,train\n"
                                     "clips/2.wav,a,evaluate\nclips/3.wav,b,\n")
    ds = open_dataset(root)
    assert ds.layout == "csv" and [c.name for c in ds.splits["evaluate"]] == ["clips/2.wav"]
    assert open_dataset(root / "labels.csv").labels == ["a", "b"]  # the CSV path itself works too


def _break(root, path, old, new):
    f = root / path
    f.write_text(f.read_text().replace(old, new, 1))


@pytest.mark.parametrize("breakage, message", [
    (("meta.csv", "audio/bus-barcelona-0-0-a.wav", "audio/bus-barcelona-0-9-a.wav"), "is not in meta.csv"),
    (("evaluation_setup/fold1_train.csv", "audio/bus-barcelona-0-0-a.wav", "../../etc/passwd"),
     "is not in meta.csv"),
    (("meta.csv", "audio/bus-helsinki-1-0-a.wav", "../../etc/passwd"), "is not in meta.csv"),
    (("evaluation_setup/fold1_train.csv", "\ttransportation\n", "\tindoor\n"), "disagrees with meta.csv"),
])
def test_bad_official_datasets(tmp_path, breakage, message):
    root = make_dcase(tmp_path / "d", "dcase2020-1b")
    _break(root, *breakage)
    with pytest.raises(DatasetError, match=message) as e:
        open_dataset(root)
    assert ":" in str(e.value) and ("fold1_" in str(e.value) or "meta.csv" in str(e.value))


def test_escaping_and_missing_paths_name_file_and_line(tmp_path):
    root = make_dcase(tmp_path / "d", "dcase2020-1b")
    for bad, message in (("../../etc/passwd", "outside the dataset root"), ("/etc/passwd", "absolute path"),
                         ("audio/nothing-here-0-0-a.wav", "does not exist")):
        for f in ("meta.csv", "evaluation_setup/fold1_train.csv"):
            _break(root, f, "audio/airport-barcelona-0-0-a.wav", bad)
        with pytest.raises(DatasetError, match=message) as e:
            open_dataset(root)
        assert "fold1_train.csv:2:" in str(e.value)
        for f in ("meta.csv", "evaluation_setup/fold1_train.csv"):
            _break(root, f, bad, "audio/airport-barcelona-0-0-a.wav")


def test_unknown_layout_and_missing_fold(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="unknown dataset layout"):
        open_dataset(tmp_path / "empty")
    root = make_dcase(tmp_path / "d", "dcase2020-1b")
    (root / "evaluation_setup" / "fold1_evaluate.csv").unlink()
    with pytest.raises(DatasetError, match="fold1_evaluate.csv: missing"):
        open_dataset(root)
    with pytest.raises(DatasetError, match="no such file"):
        open_dataset(tmp_path / "nowhere")


def test_cli_reports_bad_dataset_in_one_line(tmp_path):
    root = make_dcase(tmp_path / "d", "dcase2020-1b")
    _break(root, "evaluation_setup/fold1_evaluate.csv", "audio/airport-helsinki-1-0-a.wav", "../../etc/passwd")
    _break(root, "meta.csv", "audio/airport-helsinki-1-0-a.wav", "../../etc/passwd")
    proc = run_cli("features", str(root), "--cache-dir", str(tmp_path / "cache"), "--workers", "1")
    assert_one_line_error(proc, 2, "fold1_evaluate.csv:2", "outside the dataset root")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.npy"))
    assert_one_line_error(run_cli_here("features", str(tmp_path / "nowhere")), 2, "no such file")


# ----------------------------------------------------------------------------- TAU 2022 Mobile (DCASE 2022-2025)
def test_tau2022_mobile_layout_and_train_subsets(tmp_path):
    root = make_dcase(tmp_path / "tau22", "tau2022-mobile", seconds=1.0)
    full = open_dataset(root)
    assert full.layout == "tau2022-mobile" and len(full.splits["train"]) == 6
    clip = full.splits["train"][0]
    assert clip.name == "audio/airport-barcelona-0-0-0-a.wav" and clip.device == "a"
    assert parse_clip_name("airport-lisbon-1000-40000-3-s5.wav") == ("lisbon-1000", "s5")
    assert parse_clip_name("bus-lyon-1-12-s2.wav") == ("lyon-1", "s2")  # the 2020 names still parse
    half = open_dataset(root, split=50)
    assert [c.name for c in half.splits["train"]] == [c.name for c in full.splits["train"]][::2]
    assert len({c.label for c in half.splits["train"]}) == 3
    assert [c.name for c in half.splits["evaluate"]] == [c.name for c in full.splits["evaluate"]]  # test.csv
    assert open_dataset(root, split=100).splits["train"] == full.splits["train"]


def test_tau2022_bad_splits_are_one_line(tmp_path):
    root = make_dcase(tmp_path / "tau22", "tau2022-mobile", seconds=1.0)
    cache = ["--cache-dir", str(tmp_path / "c"), "--json"]
    assert_one_line_error(run_cli_here("features", str(root), "--split", "7", *cache), 2, "--split must be one of")
    (root / "split_setup" / "split10.csv").unlink()
    assert_one_line_error(run_cli_here("features", str(root), "--split", "10", *cache), 2, "split10.csv: missing")
    split25 = root / "split_setup" / "split25.csv"
    split25.write_text(split25.read_text() + "audio/tram-oslo-9-9-0-a.wav\tbus\n")
    assert_one_line_error(run_cli_here("features", str(root), "--split", "25", *cache), 2, "split25.csv:", "not in meta")
    assert_one_line_error(run_cli_here("features", str(root), "--split", "5", *cache), 2, "no training clips")
    old = make_dcase(tmp_path / "tau20", "tau2020-mobile")
    assert_one_line_error(run_cli_here("features", str(old), "--split", "50", *cache), 2, "TAU 2022 Mobile layout")
    assert not (tmp_path / "c").exists()


def test_tau2022_with_ten_second_clips_or_without_source_label_is_refused(tmp_path):
    cache = ["--cache-dir", str(tmp_path / "c"), "--json"]
    long = make_dcase(tmp_path / "long", "tau2022-mobile", seconds=10.0)
    for seconds in ([], ["--seconds", "1"]):  # --seconds does not make 10-s audio TAU 2022
        assert_one_line_error(run_cli_here("features", str(long), *cache, *seconds), 2,
                              "holds 1-s clips", "10 s long")
    nosource = make_dcase(tmp_path / "nosource", "tau2022-mobile", seconds=1.0)
    meta = nosource / "meta.csv"
    meta.write_text("".join("\t".join(line.split("\t")[:3]) + "\n" for line in meta.read_text().splitlines()))
    assert_one_line_error(run_cli_here("features", str(nosource), *cache), 2, "meta.csv: no source_label column")
    assert not (tmp_path / "c").exists()
    ok = make_dcase(tmp_path / "ok", "tau2022-mobile", seconds=1.0)
    assert open_dataset(ok).layout == "tau2022-mobile"


def test_symlinks_out_of_the_root_are_refused_and_inside_it_followed(tmp_path):
    import shutil

    root = make_dcase(tmp_path / "d", "dcase2020-1b")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(root / "audio" / "airport-barcelona-0-0-a.wav", outside / "real.wav")  # an existing audio file
    (root / "audio" / "link-0-0-a.wav").symlink_to(outside / "real.wav")
    (root / "audio" / "linked-dir").symlink_to(outside, target_is_directory=True)
    for bad in ("audio/link-0-0-a.wav", "audio/linked-dir/real.wav"):
        for f in ("meta.csv", "evaluation_setup/fold1_train.csv"):
            _break(root, f, "audio/airport-barcelona-0-0-a.wav", bad)
        with pytest.raises(DatasetError, match="points outside the dataset root") as e:
            open_dataset(root)
        assert "fold1_train.csv:2:" in str(e.value)
        for f in ("meta.csv", "evaluation_setup/fold1_train.csv"):
            _break(root, f, bad, "audio/airport-barcelona-0-0-a.wav")
    # a link that stays inside the root is an ordinary file
    (root / "audio" / "copy-0-0-a.wav").symlink_to(root / "audio" / "airport-barcelona-0-0-a.wav")
    for f in ("meta.csv", "evaluation_setup/fold1_train.csv"):
        _break(root, f, "audio/airport-barcelona-0-0-a.wav", "audio/copy-0-0-a.wav")
    ds = open_dataset(root)
    assert any(c.path.name == "airport-barcelona-0-0-a.wav" for c in ds.splits["train"])
