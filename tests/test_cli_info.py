"""`edgeasc info` through real subprocesses: exact numbers as JSON, one-line errors."""

import json

import pytest

from conftest import assert_one_line_error, run_cli, run_cli_here

# docs/method.md §4, by preset name: (params, MACs per 10 s)
PRESET_ROWS = {
    "d18-cp-resnet": (1_715_604, 7_774_698_624),
    "d18-damped": (1_715_604, 7_774_698_624),
    "d18-damped-stereo": (1_718_804, 7_862_074_624),
    "d18-damped-restricted": (431_828, 1_965_768_256),
    "d18-damped-w32": (109_428, 502_488_864),
    "d18-baseline-full": (3_956_628, 8_644_704_384),
    "d18-damped-decomp": (417_172, 1_271_471_232),
    "d20-cp-resnet": (1_061_638, 7_113_085_696),
    "d20-damped": (1_061_638, 7_113_085_696),
    "d20-damped-restricted": (268_678, 1_822_034_304),
    "d20-damped-decomp": (361_222, 1_304_990_464),
    "d20-damped-rho4": (1_192_710, 7_328_436_992),
    "d18-damped-pruned-400k": (1_715_604, 7_774_698_624),
    "d20-damped-pruned-250k": (1_061_638, 7_113_085_696),
    # the DCASE'20 task 1b submissions, 3 classes, stereo (the authors' counts)
    "d20-submission-1": (18_390, 211_232_064),
    "d20-submission-2": (268_166, 1_863_092_608),
    "d20-submission-3": (245_958, 1_100_455_392),
    "demo": (18_022, 130_288_224),
}


def test_every_preset_reproduces_method_table():
    listed = json.loads(run_cli_here("info", "--list-presets", "--json").stdout)
    assert set(listed) == set(PRESET_ROWS) | {"cp-mobile-d24"}  # CP-Mobile: tests/test_cp_mobile.py
    for name, (params, macs) in PRESET_ROWS.items():
        proc = run_cli_here("info", "--preset", name, "--json")
        assert proc.returncode == 0, proc.stderr
        d = json.loads(proc.stdout)
        assert (d["params"], d["macs"]) == (params, macs), name
        target = listed[name]["prune_target"]
        assert d["nonzero_params"] == (target or params)
        assert d["bytes"] == {"float32": 4 * d["nonzero_params"], "float16": 2 * d["nonzero_params"],
                              "int8": d["nonzero_params"]}
        rf = {3: 55, 4: 71, 7: 135}[d["config"]["rho"]]
        assert d["receptive_field"] == [rf, rf]


def test_flags_build_the_same_network_as_the_preset():
    proc = run_cli_here("info", "--variant", "damped-decomposed", "--rho", "3", "--width", "128",
                   "--depth-restriction", "0,1,4", "--classes", "3", "--channels", "2",
                   "--decomp-factor", "4", "--json")
    d = json.loads(proc.stdout)
    assert d["params"] == 361_222 and d["macs"] == 1_304_990_464
    assert d["variant"] == "damped-decomposed"
    assert d["output_shapes"] == {"stem": [128, 127, 215], "stage1": [128, 15, 26],
                                  "stage2": [256, 15, 26], "logits": [3]}


def test_preset_with_override_and_seconds():
    d = json.loads(run_cli_here("info", "--preset", "d20-damped", "--width", "64", "--json").stdout)
    assert d["params"] == 268_678
    d1 = json.loads(run_cli_here("info", "--preset", "d20-damped-restricted", "--seconds", "1", "--json").stdout)
    assert d1["input_shape"] == [2, 256, 44]
    assert d1["output_shapes"]["stage1"] == [64, 15, 2]
    assert d1["params"] == 268_678 and d1["macs"] < 1_822_034_304 / 9


def test_table_output_shows_layers_and_totals(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # the width run_cli gives its subprocess
    proc = run_cli_here("info", "--preset", "d20-damped-restricted")
    assert proc.returncode == 0
    for text in ("stage1.block1.conv1", "damped conv", "268,678", "1,822,034,304", "55×55", "64×127×215"):
        assert text in proc.stdout, text
    listing = run_cli_here("info", "--list-presets").stdout
    assert "d20-damped-pruned-250k" in listing and "250,000" in listing


@pytest.mark.parametrize("args, needle", [
    (["--rho", "-1"], "rho"),
    (["--variant", "decomposed", "--width", "30"], "not divisible"),
    (["--variant", "decomposed", "--width", "64", "--decomp-factor", "3"], "not divisible"),
    (["--depth-restriction", "0,1"], "three integers"),
    (["--depth-restriction", "0,1,7"], "three integers"),
    (["--depth-restriction", "x"], "three integers"),
    (["--preset", "d21-nope"], "unknown preset"),
    (["--variant", "wavelet"], "unknown variant"),
    (["--decomp-factor", "4"], "only applies to decomposed"),
    (["--damping-floor", "2"], "damping floor"),
    (["--seconds", "0"], "seconds"),
    (["--seconds", "0.1"], "too short"),
    (["--rho", "abc"], "--rho"),
    (["--no-such-flag"], "no-such-flag"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle):
    assert_one_line_error(run_cli_here("info", *args), 2, needle)


def test_version_and_help():
    assert run_cli("--version").stdout.strip() == "edgeasc 0.1.0"
    proc = run_cli("--help")
    assert proc.returncode == 0 and "info" in proc.stdout
