"""Strings from outside reach the terminal as text: labels in an ONNX file's metadata, dataset
labels, file names and the error messages that quote them never carry a live control
sequence, a bidi override or rich markup to the user's terminal; JSON stays exact."""

import io
import json
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import run_cli, run_cli_here, write_wav
from edgeasc.console import SafeConsole, Table, safe
from edgeasc.export.pipeline import export_checkpoint
from edgeasc.models import ModelConfig, build_model
from edgeasc.runtime.features import FeatureParams
from edgeasc.train.checkpoint import save_checkpoint

OSC = "\x1b]0;pwned\x07"          # retitles a terminal
CSI = "\x1b[2J\x1b[31m"            # clears the screen, turns text red
LABELS = [f"{OSC}indoor", "[bold]outdoor[/bold]", "tr\u202eansport\rX"]
SHOWN = ["\\x1b]0;pwned\\x07indoor", "[bold]outdoor[/bold]", "tr\\u202eansport\\rX"]
NAME = f"rec{CSI}\u202e.wav"
NAME_SHOWN = "rec\\x1b[2J\\x1b[31m\\u202e.wav"
DANGEROUS = {chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))} | set("\u061c\u200e\u200f\u202a\u202b\u202c"
                                                                    "\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029")


def no_live_controls(text: str) -> bool:
    """Nothing but line breaks and rich's own style codes (ESC [ digits ; m) is left."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text).replace("\n", "")
    return not (set(plain) & DANGEROUS)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("terminal")
    torch.manual_seed(0)
    model = build_model(ModelConfig(width=4, n_classes=3)).eval()
    save_checkpoint(tmp / "m.pt", {"model_config": model.config.to_dict(), "labels": LABELS,
                                   "feature_params": FeatureParams(clip_seconds=1.0).to_dict(), "channels": 2,
                                   "normalization": {"mean": [-30.0] * 256, "std": [10.0] * 256},
                                   "model": model.state_dict(), "epoch": 1, "kind": "final"})
    export_checkpoint(tmp / "m.pt", tmp / "model.onnx")
    write_wav(tmp / NAME, seconds=1.0)
    return tmp


# ----------------------------------------------------------------------------- the escaping itself
def test_safe_shows_each_control_as_its_escape_and_leaves_text_alone():
    assert safe(OSC) == "\\x1b]0;pwned\\x07"
    assert safe("a\r\n\tb\x00\x7f\x9b") == "a\\r\\n\\tb\\x00\\x7f\\x9b"
    assert safe("\u202e\u2066\u200f\u2028") == "\\u202e\\u2066\\u200f\\u2028"
    assert safe("Straße – café [bold] 100 %") == "Straße – café [bold] 100 %"
    assert safe(3) == "3"


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.text())
def test_safe_leaves_no_dangerous_character_and_changes_only_them(text):
    shown = safe(text)
    assert not set(shown) & DANGEROUS
    if not set(text) & DANGEROUS:
        assert shown == text


def test_the_consoles_never_read_markup_and_escape_what_a_caller_forgot():
    buf = io.StringIO()
    console = SafeConsole(file=buf, width=200, force_terminal=True)
    console.print(f"[red]x[/] {CSI}y \u202ez")          # a caller that forgot safe()
    table = Table(title=f"t{OSC}")
    table.add_column("c")
    table.add_row("[bold]cell[/]\r")
    console.print(table)
    text = buf.getvalue()
    assert "[red]x[/] \\x1b[2J\\x1b[31my \\u202ez" in text
    assert "[bold]cell[/]\\r" in text and "t\\x1b]0;pwned" in text
    assert no_live_controls(text)


# ----------------------------------------------------------------------------- through the commands
def test_predict_shows_hostile_labels_and_names_as_text_and_json_stays_exact(hostile, monkeypatch):
    monkeypatch.chdir(hostile)  # short names: the table shows them whole
    proc = run_cli_here("predict", "model.onnx", NAME, "--top-k", "3")
    assert proc.returncode == 0, proc.stderr
    assert no_live_controls(proc.stdout) and no_live_controls(proc.stderr)
    assert NAME_SHOWN in proc.stdout
    assert sum(shown in proc.stdout for shown in SHOWN) == 3
    assert "[bold]outdoor[/bold]" in proc.stdout     # printed, not interpreted
    proc = run_cli_here("predict", "model.onnx", NAME, "--json", "--top-k", "3")
    record = json.loads(proc.stdout)[0]
    assert record["file"] == NAME
    assert {t["label"] for t in record["top"]} == set(LABELS)


def test_info_on_a_model_shows_its_labels_as_text(hostile):
    proc = run_cli_here("info", str(hostile / "model.onnx"))
    assert proc.returncode == 0, proc.stderr
    assert no_live_controls(proc.stdout)
    assert all(shown in proc.stdout for shown in SHOWN[:1])
    assert json.loads(run_cli_here("info", str(hostile / "model.onnx"), "--json").stdout)["metadata"]["labels"] == LABELS


def test_an_error_quoting_a_hostile_name_is_one_escaped_line(hostile):
    proc = run_cli_here("predict", str(hostile / "model.onnx"), str(hostile / f"gone{OSC}.wav"))
    assert proc.returncode == 1  # the error row of a file that failed
    assert proc.stderr.count("\n") == 1 and no_live_controls(proc.stderr)
    assert "gone\\x1b]0;pwned\\x07.wav" in proc.stderr


def test_listen_lines_show_labels_as_text(hostile):
    wav = (hostile / NAME).read_bytes()
    proc = run_cli("listen", str(hostile / "model.onnx"), "-", stdin=wav)
    assert proc.returncode == 0, proc.stderr
    assert no_live_controls(proc.stdout) and no_live_controls(proc.stderr)
    assert any(shown in proc.stdout for shown in SHOWN)


def test_dataset_labels_from_folder_names_are_shown_as_text(tmp_path):
    root = tmp_path / "data"
    classes = [f"park{CSI}", "[bold]bus", "tram\u202e"]
    for c in classes:
        for i in range(5):
            write_wav(root / c / f"{i}.wav", seconds=0.5, sr=22050, channels=1)
    proc = run_cli_here("features", str(root), "--cache-dir", str(tmp_path / "cache"), "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    assert no_live_controls(proc.stdout)
    assert "park\\x1b[2J\\x1b[31m" in proc.stdout and "[bold]bus" in proc.stdout and "tram\\u202e" in proc.stdout


def test_planting_a_raw_print_is_caught(hostile):
    """The check above is not blind: the same label written raw fails it."""
    assert not no_live_controls(LABELS[0]) and not no_live_controls(LABELS[2])
