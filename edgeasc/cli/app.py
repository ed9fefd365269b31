"""The `edgeasc` application: the root command, the command groups in help order, and the entry
point that turns every user-fixable problem into one line and an exit code."""

from __future__ import annotations

import sys

import typer

from edgeasc import __version__
from edgeasc.console import err, library_output, out, safe
from edgeasc.console import verbose as verbose_env
from edgeasc.errors import EdgeascError

try:  # recent typer releases ship their own copy of click
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover - typer built on the click package
    from click.exceptions import ClickException, UsageError

def _quiet_switches() -> None:
    """typer >= 0.20 prints `<bool>` after every on/off switch (--json, --force, --help), where a
    switch takes no value: that column says nothing. Show types for options that take one."""
    option = getattr(getattr(typer, "core", None), "TyperOption", None)
    show = getattr(option, "display_type_rich", None)
    if show is None or getattr(show, "_edgeasc", False):
        return

    def display_type_rich(self, ctx):
        return None if getattr(self, "is_flag", False) or getattr(self, "is_bool_flag", False) else show(self, ctx)

    display_type_rich._edgeasc = True
    option.display_type_rich = display_type_rich


_quiet_switches()
app = typer.Typer(
    name="edgeasc",
    help="Train, compress, export and run low-complexity acoustic scene classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        out.print(f"edgeasc {__version__}")
        raise typer.Exit()


@app.callback()
def _root(ctx: typer.Context,
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit."),
          verbose: bool = typer.Option(False, "--verbose", help="Let the libraries' own warnings and log lines "
                                       "(onnxruntime, the ONNX exporter, PyTorch) through to stderr "
                                       "(also EDGEASC_VERBOSE=1).")) -> None:
    ctx.with_resource(library_output(verbose or verbose_env()))


# ----------------------------------------------------------------------------- the commands, in help order
from edgeasc.cli import (  # noqa: E402  (after `app` exists)
    data,
    demo,
    device,
    devices,
    evaluate,
    export,
    info,
    listen,
    package,
    predict,
    train,
)

app.command()(info.info)
app.command()(data.synth)
app.command()(data.features)
app.command()(train.train)
app.command("eval")(train.eval_command)
app.command("finetune-devices")(devices.finetune_devices)
app.command()(export.export)
app.command()(package.package)
app.command()(device.bench)
app.command()(predict.predict)
app.command()(listen.listen)
app.command()(evaluate.evaluate)
app.command()(demo.demo)


# ----------------------------------------------------------------------------- entry point
def main(argv: list[str] | None = None) -> None:
    """Run the CLI; every user-fixable problem ends as one line on stderr and an exit code."""
    try:
        rv = app(args=argv, prog_name="edgeasc", standalone_mode=False)
    except UsageError as e:
        if not e.format_message():  # bare `edgeasc`: the help was shown, nothing to add
            sys.exit(e.exit_code)
        where = e.ctx.command_path if e.ctx else "edgeasc"
        message = e.format_message()
        if "option: --verbose" in message and where != "edgeasc":  # given after the command
            message += " (a global option: edgeasc --verbose COMMAND ...)"
        err.print(safe(f"{where}: error: {message}"), soft_wrap=True)
        sys.exit(2)
    except ClickException as e:
        err.print(safe(f"edgeasc: error: {e.format_message()}"), soft_wrap=True)
        sys.exit(e.exit_code)
    except EdgeascError as e:
        err.print(safe(f"edgeasc: error: {e}"), soft_wrap=True)
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        rv = 130
    except OSError as e:  # the OS said no where no edgeasc code expected it: still one line
        from edgeasc.io import os_reason

        where = f"{e.filename}: " if e.filename else ""
        err.print(safe(f"edgeasc: error: {where}{os_reason(e)}"), soft_wrap=True)
        sys.exit(1)
    except MemoryError:
        err.print("edgeasc: error: not enough memory for this request (a model or recording far larger than "
                  "this machine can hold?)", markup=False, soft_wrap=True)
        sys.exit(1)
    if rv == 130:  # typer turns Ctrl-C into Exit(130) before edgeasc sees it
        err.print("edgeasc: interrupted; finished outputs are kept, nothing was left half-written", markup=False)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
