"""What a user reads when a command refuses: one line, `edgeasc: error: `, options named as they
are typed (`--epochs`, not the config field `epochs`), and no Python internals (exception class
names, module paths, tracebacks). Table-driven: a new refusal of a command-line value belongs
here."""

import re

import pytest

from conftest import run_cli_here

INTERNALS = re.compile(r"Traceback|\b[A-Z][a-zA-Z]*Error\b|\bedgeasc\.[a-z_]+\.|\.py\b|\bself\.|__\w+__")

CASES = [  # (arguments, with {tmp} for an empty folder, the exact line after "edgeasc: error: ")
    (["train", "{tmp}", "--epochs", "-1"], "--epochs must be an integer >= 1, got -1"),
    (["train", "{tmp}", "--lr", "0"], "--lr must be a finite number > 0, got 0.0"),
    (["train", "{tmp}", "--seconds", "601"], "--seconds must be at most 600 (a clip, not a recording), got 601.0"),
    (["train", "{tmp}", "--dir-p", "2", "--dir-folder", "{tmp}"], "--dir-p must be a finite number in [0, 1], got 2.0"),
    (["train", "{tmp}", "--recipe", "d99"], "--recipe must be one of d20, d24, got 'd99'"),
    (["export", "{tmp}/run", "--precision", "int4"], "--precision must be one of fp32, fp16, int8, got 'int4'"),
    (["synth", "{tmp}/out", "--profile", "nope"], "--profile must be dcase2020 or dcase2022, got 'nope'"),
    (["package", "{tmp}", "--label", "1x", "-o", "{tmp}/out"],
     "--label '1x' must be a Python identifier (letters, digits, underscores; e.g. Surname_LAB_task1): it names "
     "the package and its modules"),
]


@pytest.mark.parametrize("args, message", CASES, ids=[" ".join(a[:2] + a[2:3]) for a, _ in CASES])
def test_a_refused_value_is_one_line_naming_the_option_as_typed(tmp_path, args, message):
    proc = run_cli_here(*(a.format(tmp=tmp_path) for a in args))
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr == f"edgeasc: error: {message}\n"
    assert not INTERNALS.search(proc.stderr), proc.stderr
    assert not list(tmp_path.iterdir())  # nothing written


def test_the_internals_pattern_catches_what_it_is_for():
    for leak in ("KeyError: 'n_fft'", "Traceback (most recent call last)", "edgeasc.train.config.x", "in run.py",
                 "self.cfg", "__init__"):
        assert INTERNALS.search(leak), leak
    for fine in ("--epochs must be an integer >= 1, got -1", "bad.onnx: not a usable ONNX model", "an .npz file"):
        assert not INTERNALS.search(fine), fine
