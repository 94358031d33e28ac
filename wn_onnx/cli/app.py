"""The ``wn-onnx`` Typer app: its commands (one module per command group) and the entry point that
turns bad input into one line on stderr and exit code 2."""

from __future__ import annotations

import errno
import inspect
import os
import sys
import traceback

import typer
from rich.markup import escape
from rich.text import Text
from typer import rich_utils

from wn_onnx.cli.analyze import analyze_app
from wn_onnx.cli.check import check_command
from wn_onnx.cli.common import err
from wn_onnx.cli.data import data_app
from wn_onnx.cli.plan import apply_plan_command, plan_command
from wn_onnx.cli.report import report_command
from wn_onnx.cli.scan import points_command, scan_command
from wn_onnx.cli.sweep import sweep_app
from wn_onnx.cli.train import train_command
from wn_onnx.errors import WnError


def _plain_help_text(*, text: str, style: str = "", markup_mode: str):
    """Typer's help text without emoji codes: a grid such as ``log:a:b:n`` stays text, never 🅰
    (Typer renders help with Rich's emoji replacement on and exposes no switch)."""
    if markup_mode == "rich" and "\x1b" not in text:
        return rich_utils.highlighter(Text.from_markup(inspect.cleandoc(text), style=style, emoji=False))
    return _typer_text(text=text, style=style, markup_mode=markup_mode)


_typer_text = rich_utils._make_rich_text
rich_utils._make_rich_text = _plain_help_text

app = typer.Typer(
    name="wn-onnx",
    help="Walking Noise for any ONNX model: which layers break first under noise, and how much noise each tolerates.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
)


app.command("points")(points_command)
app.command("scan")(scan_command)
app.command("check")(check_command)
app.command("report")(report_command)
app.add_typer(analyze_app, name="analyze")
app.command("plan")(plan_command)
app.command("apply-plan")(apply_plan_command)
app.command("train")(train_command)
app.add_typer(sweep_app, name="sweep")
app.add_typer(data_app, name="data")


def _terminate(_signum: int, _frame: object) -> None:
    """SIGTERM ends a command like Ctrl-C: partial reports written, temporary folders removed."""
    raise KeyboardInterrupt


def run() -> None:
    """Console entry point: one clear line and exit 2 for bad input, never a traceback."""
    import signal

    from typer._click import exceptions as click_errors  # Typer vendors click; its usage errors live here

    signal.signal(signal.SIGTERM, _terminate)
    try:
        code = app(standalone_mode=False)
    except WnError as e:
        if os.environ.get("WN_ONNX_DEBUG") and e.__cause__ is not None:  # a plug-in's own traceback
            traceback.print_exception(e.__cause__)
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except typer.Abort:
        sys.exit(130)
    except click_errors.NoArgsIsHelpError:
        sys.exit(0)  # the help was printed
    except click_errors.ClickException as e:
        message = " ".join(e.format_message().split())
        err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except OSError as e:  # a file the user named: unwritable folder, full disk, a name too long
        if e.filename:
            what = f"cannot access {str(e.filename)[:300]}"
        elif e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EIO, errno.EPIPE):
            what = "cannot write the standard output"  # files go through wn_onnx.io.safeio, which names them
        else:
            what = "cannot access"
        err.print(f"[bold red]error:[/] {escape(what)}: {escape(e.strerror or str(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as e:
        if os.environ.get("WN_ONNX_DEBUG"):
            raise
        first = (str(e).strip().splitlines() or [""])[0]
        err.print(
            f"[bold red]internal error:[/] {type(e).__name__}: {escape(first)} (set WN_ONNX_DEBUG=1 for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(3)
    if isinstance(code, int) and code:
        sys.exit(code)
