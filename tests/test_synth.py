"""The built-in synthetic scenes: exact DCASE'20 layout, split by location, deterministic."""

import hashlib
import json

import numpy as np
import soundfile as sf

from conftest import assert_one_line_error, run_cli_here
from edgeasc.data.dcase import open_dataset
from edgeasc.data.synth import (
    SCENES,
    plan_dataset,
    split_by_location,
    synthesize_clip,
    write_dataset,
)


def _digest(folder):
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(f.relative_to(folder).as_posix().encode() + f.read_bytes())
    return h.hexdigest()


def test_layout_is_dcase2020_and_split_by_location(tmp_path):
    summary = write_dataset(tmp_path / "s", classes=3, clips_per_class=8, seconds=1.0, seed=1,
                            workers=2, progress=False)
    assert summary["clips"] == 24 and summary["train"] + summary["evaluate"] == 24
    root = tmp_path / "s"
    header = (root / "meta.csv").read_text().splitlines()[0]
    assert header == "filename\tscene_label\tidentifier\tsource_label"
    assert (root / "evaluation_setup" / "fold1_train.csv").read_text().startswith("filename\tscene_label\n")
    ds = open_dataset(root)
    assert ds.layout == "dcase2020-1b" and ds.labels == ["indoor", "outdoor", "transportation"]
    train_locs = {(c.name.split("/")[1].split("-")[0], c.location) for c in ds.splits["train"]}
    eval_locs = {(c.name.split("/")[1].split("-")[0], c.location) for c in ds.splits["evaluate"]}
    assert train_locs.isdisjoint(eval_locs)
    assert {c.label for c in ds.splits["evaluate"]} == {0, 1, 2}
    info = sf.info(str(ds.splits["train"][0].path))
    assert (info.samplerate, info.channels, info.frames) == (48000, 2, 48000)


def test_ten_classes():
    specs = plan_dataset(10, 8, seed=0)
    assert sorted({s.label for s in specs}) == list(SCENES)
    splits = split_by_location(specs)
    assert {s.scene for s in splits["evaluate"]} == set(SCENES)
    assert len(splits["evaluate"]) == 10 * 4  # one of each scene's two locations


def test_deterministic_per_seed(tmp_path):
    a = write_dataset(tmp_path / "a", clips_per_class=8, seconds=0.5, seed=7, workers=1, progress=False)
    b = write_dataset(tmp_path / "b", clips_per_class=8, seconds=0.5, seed=7, workers=2, progress=False)
    assert a["clips"] == b["clips"]
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    spec = plan_dataset(3, 8, seed=7)[0]
    assert not np.array_equal(synthesize_clip(spec, 0.5, seed=7), synthesize_clip(spec, 0.5, seed=8))


def test_scenes_differ_in_spectrum():
    """Different scenes put their energy in different places (a sanity check that the
    generator is not producing the same noise for every class)."""
    specs = plan_dataset(10, 8, seed=0)
    spectra = {}
    for scene in ("park", "street_traffic", "metro"):
        spec = next(s for s in specs if s.scene == scene)
        x = synthesize_clip(spec, 2.0, seed=0)[:, 0]
        p = np.abs(np.fft.rfft(x)) ** 2
        bands = np.add.reduceat(p, np.searchsorted(np.fft.rfftfreq(len(x), 1 / 48000), [0, 250, 1000, 4000]))
        spectra[scene] = bands / bands.sum()
    assert spectra["street_traffic"][0] > spectra["park"][0]
    assert spectra["park"][3] > spectra["street_traffic"][3]
    assert len({tuple(np.round(v, 2)) for v in spectra.values()}) == 3


def test_cli_synth_then_features(tmp_path):
    out = tmp_path / "demo"
    # two spawned workers; synth's entry point: test_first_use::test_synth_creates_missing_parent_folders
    proc = run_cli_here("synth", str(out), "--clips-per-class", "8", "--seconds", "1", "--json", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["clips"] == 24
    feats = run_cli_here("features", str(out), "--cache-dir", str(tmp_path / "c"), "--seconds", "1", "--json")
    assert feats.returncode == 0, feats.stderr
    summary = json.loads(feats.stdout)
    assert summary["layout"] == "dcase2020-1b" and summary["extracted"] and summary["frames"] == 44
    again = run_cli_here("features", str(out), "--cache-dir", str(tmp_path / "c"), "--seconds", "1")
    assert again.returncode == 0 and "reused" in again.stdout
    # refuses to overwrite, leaves the existing dataset untouched
    before = _digest(out)
    assert_one_line_error(run_cli_here("synth", str(out), "--clips-per-class", "8"), 2, "not empty")
    assert _digest(out) == before
    replaced = run_cli_here("synth", str(out), "--clips-per-class", "8", "--seconds", "0.5", "--force", "--json")
    assert replaced.returncode == 0 and sf.info(str(next((out / "audio").iterdir()))).frames == 24000
    assert not list(tmp_path.glob(".demo*"))


def test_cli_synth_bad_input(tmp_path):
    assert_one_line_error(run_cli_here("synth", str(tmp_path / "x"), "--classes", "5"), 2, "--classes")
    assert_one_line_error(run_cli_here("synth", str(tmp_path / "x"), "--clips-per-class", "2"), 2, "clips-per-class")
    assert_one_line_error(run_cli_here("synth", str(tmp_path / "x"), "--seconds", "0"), 2, "--seconds")
    (tmp_path / "afile").write_text("x")
    assert_one_line_error(run_cli_here("synth", str(tmp_path / "afile" / "x")), 1, "afile", "a file of that name exists")
    assert not (tmp_path / "x").exists()
    assert_one_line_error(run_cli_here("features", str(tmp_path), "--channels", "3"), 2, "--channels")
