"""The device-side commands `bench` and `info` on an .onnx file (`predict`: cli/predict.py;
`listen`: cli/listen.py). torch-free: they parse, call edgeasc.runtime.bench /
edgeasc.runtime.deployed, and render."""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box

from edgeasc.console import Table, fmt_int, fmt_macs, out, print_json
from edgeasc.errors import ConfigError


def parse_threads(text: str) -> list[int]:
    try:
        threads = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"--threads takes comma-separated counts like 1,2, got {text!r}") from None
    if not threads:
        raise ConfigError("--threads needs at least one count")
    return threads


# ----------------------------------------------------------------------------- info MODEL.onnx
def info_onnx(path: Path, as_json: bool) -> None:
    from edgeasc.runtime.deployed import describe_model

    d = describe_model(path)
    if as_json:
        print_json(d)
        return
    meta = d["metadata"]
    table = Table(title=f"{path} ({fmt_int(d['file_bytes'])} bytes)", box=box.SIMPLE_HEAD, show_header=False)
    table.add_column(justify="left")
    table.add_column(justify="left")
    for io_kind in ("inputs", "outputs"):
        for t in d[io_kind]:
            table.add_row(io_kind[:-1], f"{t['name']} {t['type']} [{', '.join(map(str, t['shape']))}]")
    if not d["edgeasc_export"]:
        out.print(table)
        out.print(f"not an edgeasc export (no edgeasc metadata; producer {d['producer'] or 'unknown'}): "
                  "`edgeasc bench --seconds S` still measures it")
        return
    cfg, fp, rep = meta.get("model_config", {}), meta.get("feature_params", {}), meta.get("size_report", {})
    table.add_row("labels", ", ".join(meta["labels"]))
    if cfg.get("family") == "cp-mobile":  # the family's own keys are kept unread by the runtime: any JSON
        blocks = cfg.get("n_blocks")
        shape = f"base {cfg.get('base_channels')} blocks " + (",".join(map(str, blocks)) if isinstance(blocks, list)
                                                             else str(blocks))
    else:
        shape = f"ρ{cfg.get('rho')} w{cfg.get('width')} depth {','.join(map(str, cfg.get('depth_restriction', [])))}"
    table.add_row("network", f"{meta.get('variant', '?')}: {shape}, {meta['channels']} channel(s)"
                  + (", channel-pruned" if isinstance(cfg, dict) and cfg.get("channels") else ""))
    table.add_row("frontend", ("in the graph (takes raw audio)" if meta.get("frontend") else "numpy (predict)") +
                  f": {fp.get('kind', 'perceptual')}, {fp.get('sample_rate')} Hz, n_fft {fp.get('n_fft')}"
                  + (f" (window {fp['win_length']})" if fp.get("win_length") else "") + f", hop {fp.get('hop_length')}, "
                  f"{fp.get('n_mels')} mels, clip {meta.get('clip_seconds')} s")
    table.add_row("normalisation", "in the file" if meta.get("normalization") else "none")
    folded = meta.get("folded", {})
    table.add_row("precision / folded", f"{meta.get('precision')} / damping {folded.get('damping')}, "
                  f"BatchNorm {folded.get('batchnorm')}")
    sparse = meta.get("sparse", {})
    table.add_row("sparse storage", f"{sparse.get('packed_tensors', 0)} tensors packed (--sparse {sparse.get('mode')})")
    if meta.get("macs_per_clip"):
        table.add_row("MACs per clip", f"{fmt_int(meta['macs_per_clip'])} ({fmt_macs(meta['macs_per_clip'])})")
    if rep:
        table.add_row("parameters / non-zero", f"{fmt_int(rep['params'])} / {fmt_int(rep['nonzero_params'])}")
        table.add_row(f"counted bytes ({rep['rules']})", f"{fmt_int(rep['counted_bytes'])} of "
                      f"{fmt_int(rep['budget_bytes'])}: {rep['verdict']}")
    table.add_row("edgeasc version", str(meta.get("version")))
    out.print(table)


# ----------------------------------------------------------------------------- bench
def bench(
    models: list[Path] = typer.Argument(..., help="One or more .onnx files, compared side by side."),
    threads: str = typer.Option("1", help="onnxruntime intra-op thread counts, e.g. 1,2."),
    runs: int = typer.Option(50, help="Timed runs per model and thread count."),
    warmup: int = typer.Option(5, help="Untimed runs first."),
    batch: int = typer.Option(1, help="Clips per run (latency is reported per clip)."),
    seconds: float | None = typer.Option(None, help="Clip length (default: the model's; required without metadata)."),
    arena: bool = typer.Option(True, "--arena/--no-arena", help="onnxruntime's CPU memory arena."),
    clip: Path | None = typer.Option(None, help="End to end on this audio file: decode, resample, frontend and "
                                     "network per clip, each timed (in place of the network-only measurement)."),
    profile: bool = typer.Option(False, "--profile", help="onnxruntime's profiler: the operators that take the "
                                 "time (one model, one thread count)."),
    profile_out: Path | None = typer.Option(None, "--profile-out", help="--profile: also write onnxruntime's raw "
                                            "trace (Chrome trace JSON: chrome://tracing, Perfetto) here."),
    top: int | None = typer.Option(None, help="--profile: nodes to show (default 15)."),
    force: bool = typer.Option(False, "--force", help="--profile-out may replace a file that is not an "
                               "onnxruntime trace."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Latency, throughput, real-time factor and memory of exported models under onnxruntime."""
    from edgeasc.console import progress_bar
    from edgeasc.runtime.bench import bench_models, end_to_end

    if top is not None and not profile and profile_out is None:
        raise ConfigError("--top does nothing without --profile (the nodes of the profile to show)")
    if force and profile_out is None:
        raise ConfigError("--force does nothing without --profile-out (it lets the trace replace a file that "
                          "is not an onnxruntime trace)")
    counts = parse_threads(threads)
    if profile or profile_out is not None:
        profile_command(models, counts, runs, warmup, batch, seconds, clip, profile_out,
                        15 if top is None else top, as_json, force)
        return
    if clip is not None:
        idle = [flag for flag, given in (("--batch", batch != 1), ("--seconds", seconds is not None),
                                         ("--no-arena", not arena)) if given]
        if idle:
            raise ConfigError(f"{idle[0]} does nothing with --clip (end to end runs one clip at a time, at the "
                              "model's clip length, with onnxruntime's defaults)")
        if len(counts) != 1:
            raise ConfigError("--clip measures one thread count at a time")
        with progress_bar("bench", len(models), unit="models", enabled=not as_json, transient=True) as advance:
            result = end_to_end(models, clip, counts[0], runs, min(warmup, runs), progress=advance)
        if as_json:
            print_json(result)
        else:
            render_end_to_end(result)
        return
    with progress_bar("bench", len(models) * len(counts), unit="runs", enabled=not as_json,
                      transient=True) as advance:
        result = bench_models(models, counts, runs, warmup, batch, seconds, arena, progress=advance)
    if as_json:
        print_json(result)
        return
    render_bench(result)


def profile_command(models: list[Path], counts: list[int], runs: int, warmup: int, batch: int,
                    seconds: float | None, clip: Path | None, profile_out: Path | None, top: int,
                    as_json: bool, force: bool = False) -> None:
    from edgeasc.io import refuse_input_as_output
    from edgeasc.runtime.bench import profile_model

    if len(models) != 1 or len(counts) != 1 or clip is not None:
        raise ConfigError("--profile measures one model at one thread count, network only (no --clip)")
    if not 1 <= top <= 10_000:
        raise ConfigError(f"--top must be between 1 and 10000, got {top}")
    if profile_out is not None:
        refuse_input_as_output(profile_out, models, "--profile-out")
        if profile_out.is_file() and not force and not _is_ort_trace(profile_out):
            raise ConfigError(f"--profile-out {profile_out} exists and is not an onnxruntime trace: use --force "
                              "to replace it")
        if profile_out.is_dir() or not profile_out.parent.is_dir():
            raise ConfigError(f"--profile-out {profile_out}: " + ("a folder" if profile_out.is_dir()
                                                                  else f"folder {profile_out.parent} does not exist"))
    result = profile_model(models[0], counts[0], runs, warmup, batch, seconds, profile_out)
    if as_json:
        print_json(result)
        return
    m = result["machine"]
    table = Table(title=f"{models[0].name}: onnxruntime {m['onnxruntime']} on {m['cpu']}, {result['threads']} "
                  f"thread(s), batch {result['batch']}, {result['runs']} runs after {result['warmup']} warm-up",
                  box=box.SIMPLE_HEAD)
    for col in ("op type", "node", "share", "ms / run"):
        table.add_column(col, justify="right" if col in ("share", "ms / run") else "left")
    for r in result["nodes"][:top]:
        table.add_row(r["op_type"], r["node"], f"{100 * r['share']:.1f} %", f"{r['ms_per_run']:.3f}")
    out.print(table)
    by_type = ", ".join(f"{r['op_type']} {100 * r['share']:.1f} % ({r['nodes']})" for r in result["op_types"][:8])
    out.print(f"by operator type (nodes): {by_type}", soft_wrap=True)
    out.print(f"{len(result['nodes'])} nodes, {result['kernel_ms']:.3f} ms of kernel time per run of "
              f"{result['run_ms']:.3f} ms (medians)" + (f"; trace written to {profile_out}" if profile_out else ""),
              soft_wrap=True)


def distinct_names(paths: list[str]) -> dict[str, str]:
    """Each path's shortest trailing part that no other path shares: rows for a/model.onnx and
    b/model.onnx must not both read "model.onnx"."""
    parts = {p: Path(p).parts for p in paths}
    names = {}
    for p, own in parts.items():
        for k in range(1, len(own) + 1):
            tail = own[-k:]
            if all(q == p or other[-k:] != tail for q, other in parts.items()):
                break
        names[p] = str(Path(*tail)) if tail else p
    return names


def render_end_to_end(result: dict) -> None:
    from edgeasc.runtime.bench import STAGES

    table = Table(title="end to end, per clip (median ms)", box=box.SIMPLE_HEAD)
    for col in ("model", *STAGES, "total", "total / network"):
        table.add_column(col, justify="left" if col == "model" else "right")
    names = distinct_names([r["model"] for r in result["results"]])
    for r in result["results"]:
        ms = r["median_ms"]
        frontend = "in graph" if r["with_frontend"] else f"{ms['frontend']:.2f}"
        table.add_row(names[r["model"]], f"{ms['decode']:.2f}", f"{ms['resample']:.2f}", frontend,
                      f"{ms['network']:.2f}", f"{ms['total']:.2f}", f"{r['total_over_network']:.2f}×")
    out.print(table)
    r = result["results"][0]
    out.print(f"{r['clip']}: {r['clip_rate']} Hz, {r['clip_channels']} ch, classified as {r['clip_seconds']:g}-s clips; "
              f"{r['threads']} thread(s), {r['runs']} runs; frontend FFT {r['frontend_fft']}", soft_wrap=True)


def render_bench(result: dict) -> None:
    m = result["machine"]
    rows = result["results"]
    table = Table(title=f"onnxruntime {m['onnxruntime']} on {m['cpu']} ({m['cores']} cores, {m['arch']}); "
                  f"batch {rows[0]['batch']}, {rows[0]['runs']} runs after {rows[0]['warmup']} warm-up; "
                  f"ms per {rows[0]['clip_seconds']:g} s clip", box=box.SIMPLE_HEAD)
    columns = ("model", "thr", "bytes", "×size", "MACs", "load ms", "mean", "p50", "p90", "p99", "min", "max",
               "clips/s", "RTF", "×speed", "peak MB", "+MB")
    for col in columns:
        table.add_column(col, justify="left" if col == "model" else "right", no_wrap=col != "model")
    names = distinct_names([r["model"] for r in rows])
    for r in rows:
        lat = r["latency_ms"]
        table.add_row(names[r["model"]], str(r["threads"]), fmt_int(r["file_bytes"]), f"{r['size_vs_first']:.2f}",
                      fmt_macs(r["macs_per_clip"]) if r["macs_per_clip"] else "-", f"{r['load_ms']:.0f}",
                      *(f"{lat[k]:.2f}" for k in ("mean", "p50", "p90", "p99", "min", "max")),
                      f"{r['clips_per_second']:.1f}", f"{r['real_time_factor']:.0f}×",
                      f"{r['speedup_vs_first']:.2f}", f"{r['peak_rss_bytes'] / 2**20:.1f}",
                      f"{r['rss_increase_bytes'] / 2**20:.1f}")
    out.print(table)
    out.print(f"RTF = seconds of audio per second of compute (p50). ×speed = the first model's p50 / this p50 at "
              f"the same thread count. +MB = peak RSS over an empty onnxruntime process "
              f"({result['empty_process_peak_rss_bytes'] / 2**20:.1f} MB).")


def _is_ort_trace(path: Path) -> bool:
    """Whether `path` starts as onnxruntime's profiler writes its trace (a JSON list of events,
    the first one's "cat" key first): an earlier --profile-out, which may be replaced."""
    try:
        with open(path, "rb") as f:
            head = b"".join(f.read(64).split())
    except OSError:
        return False
    return head.startswith(b'[{"cat"')
