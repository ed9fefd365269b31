"""TAU Urban Acoustic Scenes 2022 Mobile layout detection on fixtures in the exact official
layout (meta.csv with filename, scene_label, identifier, source_label; evaluation_setup/
fold1_{train,evaluate,test}.csv; split_setup/split{N}.csv and test.csv; 1-s pieces named
scene-city-location-segment-subsegment-device.wav), and the near-misses that must not be
taken for it: 2020 names without split_setup/, a split_setup that is a file, names whose
last two parts are the other way round, the 2020-1b labels, the 2018 .txt lists."""

import pytest

from conftest import write_wav
from edgeasc.data.dcase import DatasetError, open_dataset

# (scene, city, location, segment, device) per split: no location in both
TRAIN = [("airport", "lisbon", 1000, 40000, "a"), ("airport", "lisbon", 1000, 40001, "b"),
         ("bus", "lyon", 1001, 40010, "a"), ("bus", "lyon", 1001, 40011, "s1")]
EVALUATE = [("airport", "vienna", 1002, 40020, "s4"), ("bus", "prague", 1003, 40030, "c")]
HEADER = "filename\tscene_label\tidentifier\tsource_label\n"


def _name(rec, style, sub=0):
    scene, city, loc, seg, device = rec
    if style == "2022":
        return f"audio/{scene}-{city}-{loc}-{seg}-{sub}-{device}.wav"
    if style == "swapped":  # the device before the subsegment: not TAU's name
        return f"audio/{scene}-{city}-{loc}-{seg}-{device}-{sub}.wav"
    return f"audio/{scene}-{city}-{loc}-{10 * seg + sub}-{device}.wav"  # 2020: a segment per piece


def make_tau(root, style="2022", split_setup="folder", labels=None, fold_ext=".csv", source=True):
    """The official layout, small: two subsegments per training recording, one per evaluate one,
    real 1-s 44.1 kHz mono WAVs. `labels`: scene -> label (the 2020-1b groups)."""
    rows, lists = [], {"train": [], "evaluate": []}
    for split, recs in (("train", TRAIN), ("evaluate", EVALUATE)):
        for i, rec in enumerate(recs):
            for sub in range(2 if split == "train" else 1):
                name = _name(rec, style, sub)
                label = (labels or {}).get(rec[0], rec[0])
                write_wav(root / name, seconds=1.0, sr=44100, channels=1, seed=i + 10 * sub, freq=300 + 50 * i)
                rows.append((name, label, f"{rec[1]}-{rec[2]}", rec[4]))
                lists[split].append((name, label))
    cols = 4 if source else 3
    (root / "meta.csv").write_text(HEADER if source else "filename\tscene_label\tidentifier\n")
    with open(root / "meta.csv", "a") as f:
        f.writelines("\t".join(r[:cols]) + "\n" for r in rows)
    setup = root / "evaluation_setup"
    setup.mkdir()
    for split, items in lists.items():
        body = "".join(f"{n}\t{label}\n" for n, label in items)
        (setup / f"fold1_{split}{fold_ext}").write_text(body if fold_ext == ".txt" else "filename\tscene_label\n" + body)
    (setup / "fold1_test.csv").write_text("filename\n" + "".join(f"{n}\n" for n, _ in lists["evaluate"]))
    if split_setup == "folder":
        (root / "split_setup").mkdir()
        for percent in (5, 10, 25, 50, 100):
            (root / "split_setup" / f"split{percent}.csv").write_text(
                "filename\tscene_label\n" + "".join(f"{n}\t{label}\n" for n, label in lists["train"]))
        (root / "split_setup" / "test.csv").write_text("filename\n" + "".join(f"{n}\n" for n, _ in lists["evaluate"]))
    elif split_setup == "file":
        (root / "split_setup").write_text("not a folder\n")
    return root


def test_the_exact_tau2022_layout_is_detected_and_read(tmp_path):
    ds = open_dataset(make_tau(tmp_path / "tau22"))
    assert ds.layout == "tau2022-mobile" and ds.labels == ["airport", "bus"]
    assert [c.name for c in ds.splits["train"]] == [
        "audio/airport-lisbon-1000-40000-0-a.wav", "audio/airport-lisbon-1000-40000-1-a.wav",
        "audio/airport-lisbon-1000-40001-0-b.wav", "audio/airport-lisbon-1000-40001-1-b.wav",
        "audio/bus-lyon-1001-40010-0-a.wav", "audio/bus-lyon-1001-40010-1-a.wav",
        "audio/bus-lyon-1001-40011-0-s1.wav", "audio/bus-lyon-1001-40011-1-s1.wav"]
    assert [(c.label, c.location, c.device) for c in ds.splits["evaluate"]] == [(0, "vienna-1002", "s4"),
                                                                               (1, "prague-1003", "c")]
    assert ds.devices == ["a", "b", "c", "s1", "s4"]
    assert ds.summary() == {"root": str((tmp_path / "tau22").resolve()), "layout": "tau2022-mobile",
                            "labels": ["airport", "bus"], "splits": {"train": 8, "evaluate": 2},
                            "devices": ["a", "b", "c", "s1", "s4"]}
    first = ds.splits["train"][0]
    assert first.where == f"{tmp_path.resolve() / 'tau22' / 'evaluation_setup' / 'fold1_train.csv'}:2"
    assert first.path == (tmp_path / "tau22" / first.name).resolve()


@pytest.mark.parametrize("style, split_setup, layout", [
    ("2022", None, "tau2022-mobile"),       # the 1-s names alone make it TAU 2022
    ("2020", "folder", "tau2022-mobile"),   # split_setup/ alone too (DCASE 2024/2025 lists)
    ("2020", None, "tau2020-mobile"),       # near-miss: 10-s names, no split_setup/
    ("2020", "file", "tau2020-mobile"),     # near-miss: a file called split_setup
    ("swapped", None, "tau2020-mobile"),    # near-miss: ...-40000-a-0.wav is no TAU 2022 name
])
def test_what_makes_a_layout_tau2022_and_what_does_not(tmp_path, style, split_setup, layout):
    ds = open_dataset(make_tau(tmp_path / "d", style=style, split_setup=split_setup))
    assert ds.layout == layout and len(ds.splits["train"]) == 8 and len(ds.splits["evaluate"]) == 2


def test_one_subsegment_name_among_2020_names_is_enough(tmp_path):
    root = make_tau(tmp_path / "d", style="2020", split_setup=None)
    old, new = "audio/bus-prague-1003-400300-c.wav", "audio/bus-prague-1003-400300-7-c.wav"
    (root / old).rename(root / new)
    for f in ("meta.csv", "evaluation_setup/fold1_evaluate.csv"):
        (root / f).write_text((root / f).read_text().replace(old, new))
    assert open_dataset(root).layout == "tau2022-mobile"


def test_the_2020_1b_labels_and_the_2018_lists_win_over_tau2022_names(tmp_path):
    groups = {"airport": "indoor", "bus": "transportation"}
    one_b = open_dataset(make_tau(tmp_path / "1b", labels=groups))
    assert one_b.layout == "dcase2020-1b" and one_b.labels == ["indoor", "transportation"]
    old = open_dataset(make_tau(tmp_path / "2018", fold_ext=".txt"))
    assert old.layout == "dcase2018" and len(old.splits["train"]) == 8
    assert old.splits["train"][0].where.endswith("fold1_train.txt:1")  # no header line


def test_tau2022_needs_the_source_label_column_and_tau2020_does_not(tmp_path):
    root = make_tau(tmp_path / "d", source=False)
    with pytest.raises(DatasetError) as refused:
        open_dataset(root)
    assert str(refused.value) == (f"{root.resolve() / 'meta.csv'}: no source_label column; TAU 2022 Mobile is "
                                  "evaluated per recording device (seen and unseen), so meta.csv needs filename, "
                                  "scene_label, identifier and source_label")
    ds = open_dataset(make_tau(tmp_path / "d20", style="2020", split_setup=None, source=False))
    assert ds.layout == "tau2020-mobile" and ds.devices == ["a", "b", "c", "s1", "s4"]  # from the names


def test_meta_identifier_and_source_label_win_over_the_name(tmp_path):
    root = make_tau(tmp_path / "d")
    meta = root / "meta.csv"
    meta.write_text(meta.read_text().replace("audio/bus-prague-1003-40030-0-c.wav\tbus\tprague-1003\tc",
                                             "audio/bus-prague-1003-40030-0-c.wav\tbus\tprague-77\ts6")
                    .replace("audio/airport-vienna-1002-40020-0-s4.wav\tairport\tvienna-1002\ts4",
                             "audio/airport-vienna-1002-40020-0-s4.wav\tairport\t\t"))
    ds = open_dataset(root)
    assert [(c.location, c.device) for c in ds.splits["evaluate"]] == [("vienna-1002", "s4"), ("prague-77", "s6")]


def test_tau2022_train_subsets_and_test_list(tmp_path):
    root = make_tau(tmp_path / "d")
    (root / "split_setup" / "split5.csv").write_text("filename\tscene_label\naudio/airport-lisbon-1000-40000-0-a.wav"
                                                     "\tairport\naudio/bus-lyon-1001-40010-1-a.wav\tbus\n")
    (root / "split_setup" / "test.csv").write_text("filename\naudio/bus-prague-1003-40030-0-c.wav\n")
    ds = open_dataset(root, split=5)
    assert [c.name for c in ds.splits["train"]] == ["audio/airport-lisbon-1000-40000-0-a.wav",
                                                    "audio/bus-lyon-1001-40010-1-a.wav"]
    assert [(c.name, c.device, c.location) for c in ds.splits["evaluate"]] == [
        ("audio/bus-prague-1003-40030-0-c.wav", "c", "prague-1003")]
    assert ds.splits["train"][1].where == f"{root.resolve() / 'split_setup' / 'split5.csv'}:3"
    (root / "split_setup" / "test.csv").unlink()  # no test list: evaluate on fold1_evaluate
    assert len(open_dataset(root, split=5).splits["evaluate"]) == 2
    (root / "split_setup" / "split10.csv").write_text("filename\tscene_label\n")
    with pytest.raises(DatasetError) as refused:
        open_dataset(root, split=10)
    assert str(refused.value) == f"{root.resolve() / 'split_setup' / 'split10.csv'}: lists no clips"
    (root / "split_setup" / "split10.csv").unlink()
    with pytest.raises(DatasetError) as refused:
        open_dataset(root, split=10)
    assert str(refused.value) == f"{root.resolve() / 'split_setup' / 'split10.csv'}: missing (--split 10 reads it)"
    with pytest.raises(DatasetError) as refused:
        open_dataset(root, split=20)
    assert str(refused.value) == "--split must be one of 5, 10, 25, 50, 100 (percent of the training set), got 20"
    old = make_tau(tmp_path / "d20", style="2020", split_setup=None)
    with pytest.raises(DatasetError) as refused:
        open_dataset(old, split=50)
    assert str(refused.value) == (f"{old.resolve()}: --split needs the TAU 2022 Mobile layout (split_setup/), "
                                  "not tau2020-mobile")


# ----------------------------------------------------------------------------- every refusal, exactly
def _clip(root, name, label, where):
    from edgeasc.data.dcase import Clip

    return Clip(name, root / name, label, None, None, where)


@pytest.mark.parametrize("train, evaluate, message", [
    ([("x.wav", 0, "l.csv:2"), ("x.wav", 1, "l.csv:3")], [("y.wav", 0, "l.csv:4")],
     "l.csv:3: x.wav is labelled 'b' here and 'a' at l.csv:2"),
    ([("x.wav", 0, "l.csv:2"), ("z.wav", 1, "l.csv:3")], [("x.wav", 0, "")],
     "{root}: x.wav is in both train and evaluate (also at l.csv:2): evaluating on training clips leaks"),
    ([("x.wav", 0, "l.csv:2"), ("z.wav", 1, "l.csv:3"), ("x.wav", 0, "l.csv:5")], [("y.wav", 0, "l.csv:4")],
     "l.csv:5: x.wav is listed twice (also at l.csv:2): it would count twice"),
    ([("x.wav", 0, "l.csv:2")], [("y.wav", 2, "l.csv:4")], "{root}: class 'b' has no training clips (2 classes have none)"),
    ([("x.wav", 0, "l.csv:2"), ("z.wav", 2, "l.csv:3")], [("y.wav", 1, "l.csv:4")],
     "{root}: class 'b' has no training clips"),
])
def test_inconsistent_lists_are_refused_exactly(tmp_path, train, evaluate, message):
    from edgeasc.data.dcase import Dataset, check_consistent

    ds = Dataset(tmp_path, "csv", ["a", "b", "c"], {"train": [_clip(tmp_path, *c) for c in train],
                                                    "evaluate": [_clip(tmp_path, *c) for c in evaluate]})
    with pytest.raises(DatasetError) as refused:
        check_consistent(ds)
    assert str(refused.value) == message.format(root=tmp_path)


def test_consistent_lists_pass(tmp_path):
    from edgeasc.data.dcase import Dataset, check_consistent

    ds = Dataset(tmp_path, "csv", ["a", "b"], {"train": [_clip(tmp_path, "x.wav", 0, "1"), _clip(tmp_path, "y.wav", 1, "2")],
                                               "evaluate": [_clip(tmp_path, "z.wav", 0, "3")]})
    assert check_consistent(ds) is None


def test_plain_folders_split_every_fifth_clip_or_location_and_keep_names(tmp_path):
    root = tmp_path / "f"
    for i in range(10):
        write_wav(root / "kitchen" / f"{i:02d}.wav", seconds=0.1)
    for i in range(6):  # three locations with two clips each: the 5th location would evaluate: none does...
        write_wav(root / "office" / f"office-oslo-{i // 2}-{i}-b.wav", seconds=0.1)
    for i in range(10):
        write_wav(root / "street" / f"street-rome-{i // 2}-{i}-s2.WAV", seconds=0.1)
    (root / "kitchen" / "notes.txt").write_text("x")
    (root / ".hidden").mkdir()
    write_wav(root / ".hidden" / "a.wav", seconds=0.1)
    (root / "empty").mkdir()
    (root / "empty" / "readme.md").write_text("x")
    (root / "street" / "dir.wav").mkdir()
    ds = open_dataset(root)
    assert ds.layout == "folders" and ds.labels == ["kitchen", "office", "street"]
    assert [c.name for c in ds.splits["evaluate"]] == [
        "kitchen/04.wav", "kitchen/09.wav", "street/street-rome-4-8-s2.WAV", "street/street-rome-4-9-s2.WAV"]
    office = [c for c in ds.splits["train"] if c.label == 1]
    assert [(c.location, c.device) for c in office[:2]] == [("oslo-0", "b"), ("oslo-0", "b")]
    assert office[0].where == str(root.resolve() / "office" / "office-oslo-0-0-b.wav")
    assert ds.splits["train"][0].location is None and ds.splits["train"][0].device is None
    assert ds.root == root.resolve() and ds.devices == ["b", "s2"]


@pytest.mark.parametrize("body, message", [
    ("filename,label\n", "{csv}: lists no clips"),
    ("filename,label\na.wav,x\nb.wav,\n", "{csv}:3: needs a filename and a label"),
    ("a.wav,x,train\nb.wav,y,test\n", "{csv}:2: split must be 'train' or 'evaluate', got 'test'"),
    ("a.wav,x,train,extra\n", "{csv}:1: 4 columns, expected at most 3"),
    ("filename,label\na.wav,x,train\n", "{csv}:2: 3 columns, expected at most 2"),
    ("a.wav,x,train\nb.wav,x,train\n", "the dataset has no evaluation clips: add a split column or more clips per class"),
    ("a.wav,x,evaluate\n", "the dataset has no training clips"),
    (",x,train\n", "{csv}:1: empty file name"),
    ("\\\\server\\a.wav,x,train\n", "{csv}:1: absolute path '\\\\\\\\server\\\\a.wav' is not allowed; paths are "
                                  "relative to {root}"),
])
def test_plain_csv_refusals_are_exact(tmp_path, body, message):
    write_wav(tmp_path / "a.wav", seconds=0.1)
    write_wav(tmp_path / "b.wav", seconds=0.1)
    csv = tmp_path / "labels.csv"
    csv.write_text(body)
    with pytest.raises(DatasetError) as refused:
        open_dataset(tmp_path)
    assert str(refused.value) == message.format(csv=csv, root=tmp_path.resolve())


def test_plain_csv_headers_delimiters_and_names(tmp_path):
    for name in ("a.wav", "bus-lyon-1-2-c.wav", "c.wav", "d.wav"):
        write_wav(tmp_path / name, seconds=0.1)
    csv = tmp_path / "my.tsv"
    # a BOM, a 'file' header, tabs (first seen on line 5: still within the sniffed lines)
    csv.write_text("\ufefffile\tLABEL\tSplit\n\na.wav\tx\ttrain\nc.wav\ty\t\nbus-lyon-1-2-c.wav\tx\tEvaluate\n"
                   "d.wav\ty\ttrain\n")
    ds = open_dataset(csv)
    assert ds.layout == "csv" and ds.labels == ["x", "y"]
    assert [(c.name, c.where) for c in ds.splits["evaluate"]] == [("bus-lyon-1-2-c.wav", f"{csv}:5")]
    assert [c.name for c in ds.splits["train"]] == ["a.wav", "c.wav", "d.wav"]
    (bus,) = ds.splits["evaluate"]
    assert (bus.location, bus.device, bus.label) == ("lyon-1", "c", 0)
    for header in ("path,label,split\n", "filename,label,split\n", ""):
        (tmp_path / "h.txt").write_text(header + "a.wav,x,train\nc.wav,x,evaluate\n")
        assert [c.name for c in open_dataset(tmp_path / "h.txt").splits["train"]] == ["a.wav"], header
    (tmp_path / "t.txt").write_text("a.wav,x,train\nb.wav,x,train\nc.wav,x,train\nd.wav,x,train\n"
                                    "e.wav,x,train\nbus-lyon-1-2-c.wav\tx\tevaluate\n")
    with pytest.raises(DatasetError) as refused:  # the delimiter is sniffed from the first 5 lines only
        open_dataset(tmp_path / "t.txt")
    assert str(refused.value) == f"{tmp_path / 't.txt'}:6: needs a filename and a label"  # not split on tabs


@pytest.mark.parametrize("name, message", [
    ("audio.wav", "{p}: not a dataset folder or a labels CSV"),
    ("nowhere", "{p}: no such file or folder"),
])
def test_a_path_that_is_no_dataset(tmp_path, name, message):
    write_wav(tmp_path / "audio.wav", seconds=0.1)
    with pytest.raises(DatasetError) as refused:
        open_dataset(tmp_path / name)
    assert str(refused.value) == message.format(p=tmp_path / name)


def test_unknown_layouts_name_what_was_expected(tmp_path):
    (tmp_path / "meta.csv").write_text(HEADER)  # meta.csv without evaluation_setup/: not official
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    with pytest.raises(DatasetError) as refused:
        open_dataset(tmp_path)
    assert str(refused.value) == (f"{tmp_path.resolve()}: unknown dataset layout (expected meta.csv + "
                                  "evaluation_setup/, labels.csv, or one folder of audio per class)")
    (tmp_path / "meta.csv").unlink()
    (tmp_path / "evaluation_setup").mkdir()  # nor evaluation_setup/ without meta.csv
    with pytest.raises(DatasetError, match="unknown dataset layout"):
        open_dataset(tmp_path)
    (tmp_path / "meta.csv").write_text(HEADER)
    with pytest.raises(DatasetError) as refused:
        open_dataset(tmp_path, fold=2)
    setup = tmp_path.resolve() / "evaluation_setup"
    assert str(refused.value) == f"{setup}: no fold2_train.csv or fold2_train.txt"


@pytest.mark.parametrize("edit, message", [
    (("meta.csv", "audio/bus-prague-1003-40030-0-c.wav\tbus", "audio/bus-prague-1003-40030-0-c.wav\t"),
     "{root}/meta.csv:11: needs 'filename' and 'scene_label'"),
    (("meta.csv", "audio/bus-prague-1003-40030-0-c.wav\tbus", "\tbus"),
     "{root}/meta.csv:11: needs 'filename' and 'scene_label'"),
    (("meta.csv", "audio/bus-prague-1003-40030-0-c.wav\tbus", "audio/airport-vienna-1002-40020-0-s4.wav\tbus"),
     "{root}/meta.csv:11: audio/airport-vienna-1002-40020-0-s4.wav is listed twice"),
    (("evaluation_setup/fold1_evaluate.csv", "audio/bus-prague-1003-40030-0-c.wav\tbus",
      "audio/bus-prague-1003-40030-0-c.wav\tairport"),
     "{root}/evaluation_setup/fold1_evaluate.csv:3: label 'airport' disagrees with meta.csv ('bus')"),
    (("evaluation_setup/fold1_evaluate.csv", "audio/bus-prague-1003-40030-0-c.wav\tbus", "\tbus"),
     "{root}/evaluation_setup/fold1_evaluate.csv:3: '' is not in meta.csv"),
])
def test_official_list_refusals_are_exact(tmp_path, edit, message):
    root = make_tau(tmp_path / "d")
    path, old, new = edit
    (root / path).write_text((root / path).read_text().replace(old, new))
    with pytest.raises(DatasetError) as refused:
        open_dataset(root)
    assert str(refused.value) == message.format(root=root.resolve())


def test_empty_official_lists_are_refused_exactly(tmp_path):
    root = make_tau(tmp_path / "d")
    (root / "evaluation_setup" / "fold1_evaluate.csv").write_text("filename\tscene_label\n")
    with pytest.raises(DatasetError) as refused:
        open_dataset(root)
    assert str(refused.value) == f"{root.resolve()}/evaluation_setup/fold1_evaluate.csv: lists no clips"
    (root / "meta.csv").write_text(HEADER)
    with pytest.raises(DatasetError) as refused:
        open_dataset(root)
    assert str(refused.value) == f"{root.resolve()}/meta.csv: lists no clips"
    (root / "meta.csv").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(DatasetError) as refused:
        open_dataset(root)
    assert str(refused.value) == f"{root.resolve()}/meta.csv: cannot read (UnicodeDecodeError)"


def test_split_lists_with_a_file_header_and_unknown_names(tmp_path):
    root = make_tau(tmp_path / "d")
    (root / "split_setup" / "split25.csv").write_text("FILE\tscene_label\naudio/bus-lyon-1001-40010-1-a.wav\tbus\n"
                                                      "audio/airport-lisbon-1000-40000-0-a.wav\tairport\n")
    assert [c.name for c in open_dataset(root, split=25).splits["train"]] == [
        "audio/bus-lyon-1001-40010-1-a.wav", "audio/airport-lisbon-1000-40000-0-a.wav"]
    (root / "split_setup" / "split25.csv").write_text("filename\tscene_label\n\taudio/x.wav\n")
    with pytest.raises(DatasetError) as refused:
        open_dataset(root, split=25)
    assert str(refused.value) == f"{root.resolve()}/split_setup/split25.csv:2: '' is not in meta.csv's fold lists"
    (root / "split_setup" / "split25.csv").write_text("filename\nfilename\n")
    with pytest.raises(DatasetError) as refused:  # a header is always read as one
        open_dataset(root, split=25)
    assert str(refused.value) == (f"{root.resolve()}/split_setup/split25.csv:2: 'filename' is not in meta.csv's "
                                  "fold lists")
    ds = open_dataset(root, split=100)
    assert ds.root == root.resolve() and ds.layout == "tau2022-mobile"


def test_official_lists_are_read_by_column_name_not_position(tmp_path):
    root = make_tau(tmp_path / "d")
    for path in ("meta.csv", "evaluation_setup/fold1_train.csv", "evaluation_setup/fold1_evaluate.csv"):
        lines = [line.split("\t") for line in (root / path).read_text().splitlines()]
        (root / path).write_text("".join("\t".join([cells[1], cells[0], *cells[2:]]) + "\n" for cells in lines))
    ds = open_dataset(root)
    assert ds.layout == "tau2022-mobile" and len(ds.splits["train"]) == 8
    assert [(c.name, c.device) for c in ds.splits["evaluate"]] == [
        ("audio/airport-vienna-1002-40020-0-s4.wav", "s4"), ("audio/bus-prague-1003-40030-0-c.wav", "c")]


def test_2018_lists_check_their_labels_too(tmp_path):
    root = make_tau(tmp_path / "d", fold_ext=".txt")
    fold = root / "evaluation_setup" / "fold1_evaluate.txt"
    fold.write_text(fold.read_text().replace("0-c.wav\tbus", "0-c.wav\tairport"))
    with pytest.raises(DatasetError) as refused:
        open_dataset(root)
    assert str(refused.value) == f"{fold.resolve()}:2: label 'airport' disagrees with meta.csv ('bus')"


def test_a_split_list_whose_header_names_no_file_column(tmp_path):
    root = make_tau(tmp_path / "d")
    (root / "split_setup" / "split50.csv").write_text("clip\naudio/bus-lyon-1001-40010-1-a.wav\n")
    with pytest.raises(DatasetError) as refused:  # the first line is its header, whatever it says
        open_dataset(root, split=50)
    assert str(refused.value) == f"{root.resolve()}/split_setup/split50.csv:2: '' is not in meta.csv's fold lists"


def test_plain_layouts_keep_their_root_and_name_the_folder_of_an_escaping_file(tmp_path):
    write_wav(tmp_path / "a.wav", seconds=0.1)
    write_wav(tmp_path / "b.wav", seconds=0.1)
    (tmp_path / "labels.csv").write_text("a.wav,x,train\nb.wav,x,evaluate\n")
    assert open_dataset(tmp_path / "labels.csv").root == tmp_path.resolve()
    root = tmp_path / "folders"
    write_wav(root / "kitchen" / "0.wav", seconds=0.1)
    (root / "kitchen" / "1.wav").symlink_to(tmp_path / "a.wav")
    with pytest.raises(DatasetError) as refused:
        open_dataset(root)
    assert str(refused.value) == (f"{root.resolve() / 'kitchen'}: 'kitchen/1.wav' points outside the dataset root "
                                  f"{root.resolve()}")
