"""How the dashboard previews a payload: text, pretty JSON or hex, bounded, never base64."""

from __future__ import annotations

from control.api.payloads import HEX_PREVIEW, TEXT_PREVIEW, preview


def test_payload_previews_are_bounded_and_never_base64() -> None:
    assert preview(b"") == {"format": "empty", "size": 0, "text": "", "truncated": False}
    assert preview(b'{"a": [1]}')["text"] == '{\n  "a": [\n    1\n  ]\n}'
    binary = preview(bytes(range(256)) * 56)  # 14 KB
    assert binary["format"] == "binary" and binary["size"] == 14_336 and binary["truncated"]
    assert binary["text"].startswith("00 01 02") and len(binary["text"].split()) == HEX_PREVIEW
    assert preview(b"a\x00b")["format"] == "binary"  # valid UTF-8, but not text
    long = preview(b"x" * 10_000)
    assert long["format"] == "text" and len(long["text"]) == TEXT_PREVIEW and long["truncated"]
