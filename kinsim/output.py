"""Output helpers shared by every CLI group: human tables by default, ``--json`` for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any


def to_jsonable(value: Any) -> Any:
    """Bytes become hex; containers recurse; everything else must already be JSON-friendly."""
    if isinstance(value, bytes | bytearray):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [to_jsonable(v) for v in value]
    return value


def print_json(value: Any, file=None) -> None:
    json.dump(to_jsonable(value), file or sys.stdout, indent=2, sort_keys=False)
    (file or sys.stdout).write("\n")


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain aligned text table; empty cells show as '-'."""
    text_rows = [[("-" if c is None or c == "" else str(c)) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line.rstrip(), "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in text_rows]
    return "\n".join(out)


def key_values(pairs: Iterable[tuple[str, Any]]) -> str:
    pairs = list(pairs)
    width = max((len(k) for k, _ in pairs), default=0)
    return "\n".join(f"{k.ljust(width)}  {'-' if v is None or v == '' else v}" for k, v in pairs)


def emit(args, value: Any, human: Callable[[Any], str] | str | None = None) -> None:
    """Print ``value`` as JSON when ``--json`` was given, else through ``human``."""
    if getattr(args, "json", False):
        print_json(value)
    elif callable(human):
        print(human(value))
    elif human is not None:
        print(human)


def json_parent():
    """An argparse parent giving every leaf command its own ``--json`` (``kinsim lpa chip info --json``)."""
    import argparse

    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    return parent


def command_group(subparsers, name: str, help_text: str, description: str | None = None, **kwargs):
    """A group of commands (``kinsim lpa``, ``kinsim lpa profile``, ...): the group parser prints its
    help (exit 2) when no command is given; returns the subparsers to add the commands to."""
    kwargs.setdefault("parents", [json_parent()])  # --json before the command works too
    parser = subparsers.add_parser(name, help=help_text, description=description or help_text, **kwargs)
    parser.set_defaults(func=lambda _args: parser.print_help() or 2)
    return parser.add_subparsers(dest=f"{parser.prog.replace(' ', '_')}_command", metavar="COMMAND")


def port_number(text: str) -> int:
    """An argparse type for TCP ports: 0 (any free port) to 65535."""
    import argparse

    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a port is a number, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {port}")
    return port
