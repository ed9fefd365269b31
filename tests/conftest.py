import contextlib
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# One OpenMP thread for torch here and in every CLI subprocess (they inherit the environment),
# set before anything imports torch. The tests run tiny networks, on whose kernels a second
# thread mostly spins: a tiny training measured 0.6 CPU-s with one thread and 9-11 with two, on
# a busy 2-core machine, and no faster. OMP_NUM_THREADS set by the caller still wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# `edgeasc train` writes its PNG figures only where a test asks for them (EDGEASC_PLOTS=1: the
# tests of what a run writes): matplotlib took ~0.75 CPU-s per run, a tenth of the suite's CPU.
os.environ["EDGEASC_PLOTS"] = "0"

# The console decides its width when first imported (160 columns when stdout is not a terminal and
# $COLUMNS is unset). pytest-xdist's workers inherit a $COLUMNS of the controller's terminal (80
# without one): dropped, so that a worker renders as a serial run does. Imported here, before any
# test sets $COLUMNS, so that no test's width depends on which test imported it first.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.pop("COLUMNS", None)
import edgeasc.console  # noqa: E402,F401


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None,
            timeout: float = 300, python_prelude: str | None = None,
            stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """Run `edgeasc ARGS` in a real subprocess (the installed entry point's code path);
    `stdin`: bytes fed to its standard input (stdout and stderr still come back as text)."""
    code = "from edgeasc.cli import main; main()"
    if python_prelude:
        code = python_prelude + "\n" + code
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, input=stdin,
                          text=stdin is None, env=full_env, cwd=cwd, timeout=timeout)
    if stdin is not None:
        proc.stdout, proc.stderr = proc.stdout.decode(), proc.stderr.decode()
    return proc


def run_cli_here(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """`edgeasc ARGS` through the same `main()` (parsing, error rendering, exit code), in this
    process: no second interpreter and torch import (2-3 s each). For checks of what a command
    says and refuses; a test of the process itself (the entry point, signals, its environment,
    a device install without torch) uses run_cli, and every command keeps at least one.
    `stdin`: bytes the command reads as its standard input (sys.stdin.buffer)."""
    from edgeasc.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    saved_stdin = sys.stdin
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                main(list(args))
            except SystemExit as exc:
                code = exc.code
    finally:
        sys.stdin = saved_stdin
    if not isinstance(code, int):  # sys.exit("message") or sys.exit(None)
        code = 0 if code is None else 1
    return subprocess.CompletedProcess(["edgeasc", *args], code, stdout.getvalue(), stderr.getvalue())


# Importing torch raises ImportError, as on a device install without the train extra.
HIDE_TORCH = "import sys; sys.modules['torch'] = None"


def run_torchrun(*args: str, nproc: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node=N -m edgeasc ARGS` with one thread per rank, in a
    session of its own, so that no rank process outlives the test (killed on timeout)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m",
           "edgeasc", *args]
    popen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    try:
        stdout, stderr = popen.communicate(timeout=timeout)
    finally:
        if popen.poll() is None:  # never leave rank processes behind
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()
    return subprocess.CompletedProcess(cmd, popen.returncode, stdout, stderr)


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Every test, and every CLI subprocess it starts, gets a cache root of its own: what a user
    (or an earlier session) left in ~/.cache/edgeasc must not change any result."""
    root = tmp_path_factory.mktemp("edgeasc-cache")
    old = os.environ.get("EDGEASC_CACHE")
    os.environ["EDGEASC_CACHE"] = str(root)
    yield root
    if old is None:
        os.environ.pop("EDGEASC_CACHE", None)
    else:
        os.environ["EDGEASC_CACHE"] = old


def workers_shared_folder(tmp_path_factory) -> Path:
    """A folder this run's xdist workers share (their temporary folders' parent, new for each run);
    without xdist, the session's own."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _numba_kernels_compiled_when_called() -> None:
    """numba.vectorize / numba.guvectorize given signatures compile them all when decorating;
    without, they build a dynamic (g)ufunc that compiles each signature on its first call."""
    import numba

    eager_guvectorize, eager_vectorize = numba.guvectorize, numba.vectorize
    if getattr(eager_guvectorize, "lazy", False):
        return

    def guvectorize(*args, **kwargs):
        if len(args) >= 2 and isinstance(args[0], list | tuple) and isinstance(args[1], str):
            args = args[1:]  # (signatures, layout) -> (layout)
        return eager_guvectorize(*args, **kwargs)

    def vectorize(*args, **kwargs):
        if args and isinstance(args[0], list | tuple):
            args = args[1:]
        return eager_vectorize(*args, **kwargs)

    guvectorize.lazy = vectorize.lazy = True
    numba.guvectorize, numba.vectorize = guvectorize, vectorize


@pytest.fixture(scope="session")
def librosa_compiled(tmp_path_factory):
    """librosa is the suite's reference (filterbanks, STFT, loading). Its first use in a new
    environment compiles numba kernels and caches them on disk: every signature of every kernel
    its modules declare, ~16 CPU-s, although the suite calls two or three of them. Here they
    compile for the types they are called with, when first called (3.5 CPU-s; the same Python
    functions, compiled by the same numba: the references are equal to the bit, measured). The
    test files using librosa start with this fixture, before anything loads a librosa submodule
    (`import librosa` alone loads none; a process that has loaded them keeps its kernels).
    SAME_WORKER (below) keeps them on one xdist worker; should another worker need librosa too,
    it waits on a lock in the workers' shared temporary folder and loads the cache instead of
    compiling the kernels a second time."""
    import fcntl

    import numpy as np

    # LLVM without optimisation: the same IEEE arithmetic (numba uses no fast-math unless asked),
    # compiled faster, run slower; the references run few compiled kernels (|X|^2 of the STFT)
    os.environ.setdefault("NUMBA_OPT", "0")
    if "librosa.util" not in sys.modules:  # else compiled (or loaded) already: mutmut's repeated sessions
        _numba_kernels_compiled_when_called()
    lock = workers_shared_folder(tmp_path_factory) / "edgeasc-librosa-numba.lock"
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        import librosa

        y = np.zeros(4096, dtype=np.float32)  # the kernels the suite's calls compile, cached while locked
        librosa.feature.melspectrogram(y=y, sr=22050, n_fft=1024, hop_length=512, n_mels=16)
        librosa.perceptual_weighting(np.ones((4, 2)), librosa.fft_frequencies(sr=22050, n_fft=8)[1:], ref=1.0)


def synthetic_scenes(tmp_path_factory, dest: Path, seed: int) -> Path:
    """The suite's small synthetic set (edgeasc.data.synth: 3 classes, 8 clips of 1 s, `seed`)
    written to `dest`. Each seed is synthesised once per test session (~1.1 CPU-s; 13 modules use
    six seeds), in the folder the xdist workers share, under a lock, then copied for the module:
    tests may change their copy. A mutant of the synthesis writes it in its own session."""
    import fcntl
    import shutil

    from edgeasc.data.synth import write_dataset

    store = workers_shared_folder(tmp_path_factory) / "edgeasc-synthetic-scenes"
    store.mkdir(exist_ok=True)
    written, done = store / f"seed{seed}", store / f"seed{seed}.complete"
    with open(store / f"seed{seed}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(written, ignore_errors=True)  # a worker killed while writing it
            write_dataset(written, classes=3, clips_per_class=8, seconds=1.0, seed=seed, workers=1, progress=False)
            done.touch()
    shutil.copytree(written, dest)
    return dest


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(autouse=True)
def export_memo_in_this_process(request):
    """Repeated exports of an identical network reuse the first one's bytes (tests/export_memo.py
    says why that is faithful); a test marked `real_export` runs the exporter every time."""
    import export_memo

    export_memo.install_if_loaded()
    export_memo.enabled = request.node.get_closest_marker("real_export") is None
    yield
    export_memo.enabled = True


# ----------------------------------------------------------------------------- shared artefacts
# Built once per session for every module that uses them (a module-scoped fixture imported into
# a second module is built again there). Tests only read them; a test that changes one copies it.
@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """test_runtime's small pruned model exported three ways: (model, paths)."""
    import test_runtime

    return test_runtime.build_exported(tmp_path_factory.mktemp("runtime"))


@pytest.fixture(scope="session")
def scenes_model(tmp_path_factory):
    """test_events' model trained to tell a hum, noise and a rumble apart, as ONNX."""
    import test_events

    return test_events.build_scenes_model(tmp_path_factory)


# ----------------------------------------------------------------------------- audio fixtures
def write_wav(path: Path, seconds: float = 1.0, sr: int = 48000, channels: int = 2,
              subtype: str = "PCM_16", seed: int = 0, freq: float = 440.0) -> Path:
    """A real audio file: a tone plus noise, `channels` channels."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t)[:, None] + 0.05 * rng.standard_normal((n, channels))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x.astype(np.float32), sr, subtype=subtype)
    return path


SCENES10 = ["airport", "bus", "metro", "metro_station", "park", "public_square", "shopping_mall",
            "street_pedestrian", "street_traffic", "tram"]
GROUP = {"airport": "indoor", "metro_station": "indoor", "shopping_mall": "indoor", "park": "outdoor",
         "public_square": "outdoor", "street_pedestrian": "outdoor", "street_traffic": "outdoor",
         "bus": "transportation", "metro": "transportation", "tram": "transportation"}


def make_dcase(root: Path, layout: str, scenes=("airport", "bus", "park"), seconds: float = 0.5) -> Path:
    """A tiny development set in the exact official layout (docs/method.md §5).

    Per scene: two locations in two cities, two segments each; the first city trains,
    the second evaluates (so no location is in both splits). tau2022-mobile: 1-s mono 44.1 kHz
    pieces named with a subsegment, plus split_setup/split{5..100}.csv and test.csv."""
    devices = ["a", "b", "s1"] if layout in ("tau2020-mobile", "tau2022-mobile") else ["a"]
    tau22 = layout == "tau2022-mobile"
    rows, train, evaluate = [], [], []
    for i, scene in enumerate(scenes):
        for j, city in enumerate(("barcelona", "helsinki")):
            for seg in range(2):
                device = devices[(i + seg) % len(devices)]
                name = f"audio/{scene}-{city}-{j}-{seg}{'-0' if tau22 else ''}-{device}.wav"
                label = GROUP[scene] if layout == "dcase2020-1b" else scene
                write_wav(root / name, seconds=seconds, seed=i * 10 + j * 2 + seg, freq=200 + 100 * i,
                          **({"sr": 44100, "channels": 1} if tau22 else {}))
                rows.append((name, label, f"{city}-{j}", device))
                (evaluate if city == "helsinki" else train).append((name, label))
    (root / "meta.csv").write_text("filename\tscene_label\tidentifier\tsource_label\n"
                                   + "".join("\t".join(r) + "\n" for r in rows))
    setup = root / "evaluation_setup"
    setup.mkdir(parents=True, exist_ok=True)
    for split, items in (("train", train), ("evaluate", evaluate)):
        body = "".join(f"{n}\t{label}\n" for n, label in items)
        if layout == "dcase2018":
            (setup / f"fold1_{split}.txt").write_text(body)
        else:
            (setup / f"fold1_{split}.csv").write_text("filename\tscene_label\n" + body)
    if tau22:  # DCASE 2024/2025: train subsets (every k-th training clip) and the test list
        subsets = root / "split_setup"
        subsets.mkdir(exist_ok=True)
        for percent in (5, 10, 25, 50, 100):
            picked = train[::100 // percent]
            (subsets / f"split{percent}.csv").write_text("filename\tscene_label\n"
                                                          + "".join(f"{n}\t{label}\n" for n, label in picked))
        (subsets / "test.csv").write_text("filename\n" + "".join(f"{n}\n" for n, _ in evaluate))
    return root


def pytest_terminal_summary(terminalreporter):
    import export_memo

    if export_memo.STATS["misses"]:
        terminalreporter.write_line("ONNX exports: {misses} run, {hits} reused, {substituted} with other weights (tests/export_memo.py)".format(**export_memo.STATS))


# ----------------------------------------------------------------------------- xdist scheduling
# `--dist loadfile` runs each test file on one worker, so its module fixtures are built once. These
# files also share what is costly to build (a session fixture, or the same trained network that
# each file exports): each group runs on one worker, so it is built once, not on both.
SAME_WORKER = {
    "test_runtime.py": "exported", "test_listen.py": "exported", "test_profile.py": "exported",
    "test_events.py": "scenes_model", "test_mqtt.py": "scenes_model",
    "test_hostile.py": "the TRAIN run", "test_first_use.py": "the TRAIN run",
    "test_devices.py": "per-device runs", "test_package.py": "per-device runs",
    "test_terminal.py": "the tiny checkpoint", "test_outputs.py": "the tiny checkpoint",
    # librosa, the oracle: its first use compiles numba kernels (librosa_compiled above)
    "test_features.py": "librosa", "test_features_logmel_gaps.py": "librosa", "test_audio.py": "librosa",
    "test_logmel.py": "librosa",
}


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class OneWorkerPerSharedArtefact(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = super()._split_scope(nodeid)
            group = SAME_WORKER.get(Path(file).name)
            return f"shared: {group}" if group else file

    return OneWorkerPerSharedArtefact(config, log)


# The first run after set-up writes the bytecode of all that the test modules import (torch, onnx,
# onnxscript, sympy...): 7 CPU-s of a worker's 12 to collect. Two workers collecting at once would
# both compile it; the others collect once gw0 has, and read its bytecode instead.
def _collected_flag() -> Path | None:
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    return Path(tempfile.gettempdir()) / f"edgeasc-tests-{run}-gw0-collected" if run else None


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session):
    flag = _collected_flag()
    if flag is not None and os.environ.get("PYTEST_XDIST_WORKER") != "gw0":
        deadline = time.monotonic() + 120  # gw0 failing to collect fails the run anyway
        while not flag.exists() and time.monotonic() < deadline:
            time.sleep(0.05)


def pytest_collection_finish(session):
    flag = _collected_flag()
    if flag is not None and os.environ.get("PYTEST_XDIST_WORKER") == "gw0":
        flag.touch()


def pytest_sessionfinish(session):
    flag = _collected_flag()
    if flag is not None and os.environ.get("PYTEST_XDIST_WORKER") == "gw0":
        flag.unlink(missing_ok=True)
