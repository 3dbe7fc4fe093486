"""Reading and writing the JSON documents of the formats, with one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pipeenv.errors import PipeenvError

__all__ = ["check_format", "plain_number", "read_json", "write_json"]


def read_json(path: str | Path, what: str) -> dict[str, Any]:
    """Read a JSON object from ``path``; ``what`` names the document in errors."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise PipeenvError(f"{what}: file not found: {p}") from None
    except OSError as exc:
        raise PipeenvError(f"{what}: cannot read {p}: {exc.strerror}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PipeenvError(
            f"{what}: {p} is not valid JSON (line {exc.lineno}: {exc.msg})"
        ) from None
    if not isinstance(doc, dict):
        raise PipeenvError(f"{what}: {p} must hold a JSON object")
    return doc


def write_json(path: str | Path, doc: Any, *, overwrite: bool = True) -> None:
    """Write ``doc`` as indented JSON; refuse to replace a file when ``overwrite`` is False."""
    p = Path(path)
    if not overwrite and p.exists():
        raise PipeenvError(f"output: {p} exists (pass --force to overwrite)")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(doc, indent=1) + "\n")


def check_format(doc: dict[str, Any], expected: str, what: str) -> None:
    """Reject a document whose ``format`` field is not ``expected``."""
    fmt = doc.get("format")
    if fmt != expected:
        raise PipeenvError(f"{what}: field 'format' must be {expected!r}, got {fmt!r}")


def plain_number(x: float) -> int | float:
    """An integral float as int (bytes stay ints in JSON), anything else unchanged."""
    if isinstance(x, float) and math.isfinite(x) and x.is_integer() and abs(x) < 2**53:
        return int(x)
    return x
