"""How the dashboard shows a payload: as text, as pretty-printed JSON, or as hex for binary – a bounded
preview, never the whole of a large payload and never a wall of base64 (a 14 KB binary payload once
pushed the live view's other messages off the screen)."""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["HEX_PREVIEW", "TEXT_PREVIEW", "preview"]

TEXT_PREVIEW = 2048  # characters of text or JSON shown
HEX_PREVIEW = 256  # bytes of a binary payload shown as hex
_JSON_LIMIT = 65_536  # larger payloads are not parsed as JSON (shown as text)
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def preview(payload: bytes) -> dict[str, Any]:
    """`{"format": "text" | "json" | "binary" | "empty", "size": bytes, "text": ..., "truncated": bool}`;
    for binary, `text` is space-separated hex of the first HEX_PREVIEW bytes."""
    size = len(payload)
    if not payload:
        return {"format": "empty", "size": 0, "text": "", "truncated": False}
    try:
        text = payload.decode("utf-8")
        if _CONTROL.search(text):  # valid UTF-8 but not text a person reads (NUL, escapes, ...)
            raise UnicodeDecodeError("utf-8", payload, 0, 1, "control character")
    except UnicodeDecodeError:
        shown = payload[:HEX_PREVIEW]
        return {"format": "binary", "size": size, "text": shown.hex(" "), "truncated": size > len(shown)}
    fmt = "text"
    if size <= _JSON_LIMIT and text.lstrip()[:1] in ("{", "["):
        try:
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
            fmt = "json"
        except (ValueError, RecursionError):
            pass
    return {"format": fmt, "size": size, "text": text[:TEXT_PREVIEW], "truncated": len(text) > TEXT_PREVIEW}
