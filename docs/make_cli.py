"""Write docs/cli.md, every option of every command, from the Typer app itself.

    python docs/make_cli.py            # rewrite docs/cli.md
    python docs/make_cli.py --check    # exit 1 when docs/cli.md is not what this would write

tests/test_docs.py runs the check, so the page cannot drift from the commands.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import typer
import typer.main

from wn_onnx.io.config import MAX_PARALLEL

OUT = Path(__file__).with_name("cli.md")

HEADER = """\
# Command-line reference

Every command and option of `wn-onnx`, generated from the command line itself by
`python docs/make_cli.py` (do not edit by hand; `tests/test_docs.py` checks that it is up to date).
`wn-onnx COMMAND --help` prints the same. Examples and explanations: [the README](../README.md) and
[the guide](guide.md).
"""


def _cell(text: str) -> str:
    """One Markdown table cell: one line, pipes and angle brackets escaped, Rich markup left out."""
    text = re.sub(r"\[/?(bold|dim|italic|red|green|yellow|cyan|magenta|blue)[^\]]*\]", "", text)
    text = " ".join(text.split())
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _code(text: str) -> str:
    return f"`{text}`".replace("|", "\\|") if text else ""


def _names(param) -> str:
    names = [*param.opts, *param.secondary_opts]
    if param.param_type_name == "argument":
        return _code(param.name.upper())
    return " / ".join(_code(n) for n in names)


def _type(param, ctx) -> str:
    if getattr(param, "is_flag", False):
        return "flag"
    label = param.display_type(ctx).strip("<>")
    if getattr(param.type_descriptor, "is_ranged", False):  # "int range" → "int, 1…100000"
        low = "" if param.min is None else param.min
        high = "" if param.max is None else param.max
        if high == MAX_PARALLEL:  # the machine's: the page must not depend on where it was written
            high = "4 × cores"
        label = f"{label.split()[0]}, {low}…{high}"
    if getattr(param, "multiple", False):
        label += ", repeatable"
    return _code(label)


def _default(param) -> str:
    if param.required:
        return "required"
    value = param.default
    if callable(value):
        return "(dynamic)"
    if getattr(param, "is_flag", False) and param.secondary_opts:
        on = param.opts[0] if value else param.secondary_opts[0]
        return _code(on)
    if value is None or value == () or value == [] or value is False:
        return ""
    if hasattr(value, "value"):  # an Enum
        value = value.value
    if isinstance(value, (list, tuple)):
        value = ",".join(map(str, value))
    return _code(str(value))


def _command(lines: list[str], path: str, command, parent_ctx) -> None:
    ctx = typer._click.Context(command, info_name=path.split()[-1], parent=parent_ctx)
    lines += ["", f"## `{path}`", ""]
    if command.help:
        lines += [" ".join(command.help.split("\n\n")[0].split()), ""]
    subcommands = getattr(command, "commands", None)
    if subcommands:
        lines.append(
            "Sub-commands: " + ", ".join(f"[`{name}`](#{_anchor(f'{path} {name}')})" for name in subcommands) + "."
        )
        for name, sub in subcommands.items():
            _command(lines, f"{path} {name}", sub, ctx)
        return
    params = [p for p in command.params if not getattr(p, "hidden", False)]
    lines += ["| option | type | default | meaning |", "|---|---|---|---|"]
    for p in params:
        lines.append(f"| {_names(p)} | {_type(p, ctx)} | {_default(p)} | {_cell(p.help or '')} |")


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but '-' and '_' dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def render() -> str:
    from wn_onnx.cli.app import app

    root = typer.main.get_command(app)
    ctx = typer._click.Context(root, info_name="wn-onnx")
    lines = [
        HEADER.rstrip(),
        "",
        "Commands: " + ", ".join(f"[`{n}`](#{_anchor('wn-onnx ' + n)})" for n in root.commands) + ".",
    ]
    for name, command in root.commands.items():
        _command(lines, f"wn-onnx {name}", command, ctx)
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python docs/make_cli.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
