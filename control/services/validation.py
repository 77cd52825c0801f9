"""Small field checks shared by the services; each failure names its field (422 in the REST API)."""

from __future__ import annotations

from typing import Any

from control.errors import ValidationFailed

__all__ = ["Fields"]


class Fields:
    """Collects field errors, then raises them together: a user fixes every field in one round."""

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}

    def fail(self, field: str, message: str) -> None:
        self.errors.setdefault(field, message)

    def name(self, field: str, value: Any, *, required: bool = True, max_length: int = 255) -> str | None:
        if value is None:
            if required:
                self.fail(field, f"The {field} field is required.")
            return None
        if not isinstance(value, str):
            self.fail(field, f"The {field} field must be a string.")
            return None
        if required and not value.strip():
            self.fail(field, f"The {field} field is required.")
            return None
        if len(value) > max_length:
            self.fail(field, f"The {field} field must not be greater than {max_length} characters.")
            return None
        if "\x00" in value:
            self.fail(field, f"The {field} field must not contain the NUL character.")
            return None
        return value

    def text(self, field: str, value: Any, *, max_length: int = 10_000) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            self.fail(field, f"The {field} field must be a string.")
            return None
        if len(value) > max_length:
            self.fail(field, f"The {field} field must not be greater than {max_length} characters.")
            return None
        return value

    def password(self, field: str, value: Any) -> str | None:
        """An account password: 8 to 1024 characters (absent is allowed: no dashboard login)."""
        text = self.text(field, value, max_length=1024)
        if text is not None and len(text) < 8:
            self.fail(field, f"The {field} field must be at least 8 characters.")
            return None
        return text

    def boolean(self, field: str, value: Any) -> bool | None:
        if value is None:
            return None
        if not isinstance(value, bool):
            self.fail(field, f"The {field} field must be true or false.")
            return None
        return value

    def integer(self, field: str, value: Any, *, required: bool = False, low: int = 1, high: int = 2**63 - 1) -> int | None:
        if value is None:
            if required:
                self.fail(field, f"The {field} field is required.")
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(field, f"The {field} field must be an integer between {low} and {high}.")
            return None
        return value

    def choice(self, field: str, value: Any, choices: tuple[str, ...]) -> str | None:
        if value is None:
            return None
        if value not in choices:
            self.fail(field, f"The selected {field} is invalid; it must be one of: {', '.join(choices)}.")
            return None
        return str(value)

    def check(self) -> None:
        if self.errors:
            raise ValidationFailed(dict(self.errors))
