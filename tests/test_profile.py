"""`edgeasc bench MODEL --profile`: onnxruntime's profiler on the CP-ResNet export of
test_runtime, torch and onnx hidden; the raw trace with --profile-out."""

import json
import statistics

import pytest
from test_runtime import DEVICE

from conftest import assert_one_line_error, run_cli, run_cli_here


def test_profile_shares_add_up_and_convs_dominate_a_cp_resnet(exported, tmp_path):
    _, paths = exported
    trace_path = tmp_path / "trace.json"
    proc = run_cli("bench", str(paths["fp32"]), "--profile", "--runs", "20", "--warmup", "3", "--json",
                   "--profile-out", str(trace_path), python_prelude=DEVICE)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert sum(n["share"] for n in r["nodes"]) == pytest.approx(1.0, abs=1e-9)
    assert sum(t["share"] for t in r["op_types"]) == pytest.approx(1.0, abs=1e-9)
    assert sum(t["nodes"] for t in r["op_types"]) == len(r["nodes"])
    assert r["conv_share"] > 0.5 and r["op_types"][0]["op_type"] == "Conv", r["op_types"]
    assert [n["share"] for n in r["nodes"]] == sorted((n["share"] for n in r["nodes"]), reverse=True)
    assert r["kernel_ms"] == pytest.approx(sum(n["ms_per_run"] for n in r["nodes"]))
    assert {n["runs"] for n in r["nodes"]} == {20}  # the timed runs only: the warm-up is left out
    # the raw trace: every run (3 warm-up + 20), each with every node; the numbers are the
    # medians of the timed (last 20) runs' kernel times
    trace = json.loads(trace_path.read_text())
    runs = sorted((e for e in trace if e.get("name") == "model_run"), key=lambda e: e["ts"])
    assert len(runs) == 23
    node_events = sorted((e for e in trace if e.get("cat") == "Node"), key=lambda e: e["ts"])
    per_run = len(node_events) // 23
    assert per_run == len(r["nodes"]) and len(node_events) == 23 * per_run
    timed = node_events[3 * per_run:]
    for row in r["nodes"][:5]:
        durations = [e["dur"] for e in timed if e["name"] == row["node"] + "_kernel_time"]
        assert len(durations) == 20 and row["ms_per_run"] == statistics.median(durations) / 1e3
    shown = run_cli_here("bench", str(paths["fp32"]), "--profile", "--runs", "5", "--top", "3")
    assert shown.returncode == 0, shown.stderr
    assert "op type" in shown.stdout and "by operator type (nodes): Conv" in shown.stdout
    assert " nodes, " in shown.stdout and "ms of kernel time per run" in shown.stdout


def test_profile_refusals(exported, tmp_path):
    _, paths = exported
    m = str(paths["fp32"])
    assert_one_line_error(run_cli_here("bench", m, "--profile-out", m), 2,
                          "--profile-out", "is one of the inputs")

    def refused(*args, needle):
        r = run_cli_here("bench", *args)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr, r.stderr

    refused(m, m, "--profile", needle="one model at one thread count")
    refused(m, "--profile", "--threads", "1,2", needle="one model at one thread count")
    refused(m, "--profile", "--clip", m, needle="no --clip")
    refused(m, "--profile-out", str(tmp_path / "none" / "t.json"), needle="does not exist")
    refused(m, "--profile-out", str(tmp_path), needle="a folder")
    refused(str(paths["bare"]), "--profile", needle="pass --seconds")
    assert not list(tmp_path.iterdir())
    # a file that is not an onnxruntime trace is replaced only with --force; an earlier trace is
    notes = tmp_path / "notes.json"
    notes.write_text('[{"mine": 1}]')
    refused(m, "--profile-out", str(notes), needle="exists and is not an onnxruntime trace: use --force")
    assert notes.read_text() == '[{"mine": 1}]'
    for extra in (["--force"], []):  # the second run replaces the first's trace without --force
        done = run_cli_here("bench", m, "--runs", "2", "--warmup", "0", "--profile-out", str(notes), *extra)
        assert done.returncode == 0, done.stderr
        assert json.loads(notes.read_text())[0]["cat"] == "Session"
