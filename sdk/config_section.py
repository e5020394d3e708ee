"""Read one table of a profile: typed getters that turn every wrong key, type or range into one ``ConfigError``.

:class:`Section` is what ``sdk.config`` parses each of ``[board]``, ``[device]``, ``[broker]``, ``[outbox]`` and
``[policy]`` with (the rules are in that module's docstring): unknown keys are refused with the allowed ones
and the closest match, a value is checked for type and range, and a relative path resolves against the
folder of the file it was read from.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sdk.errors import ConfigError

__all__ = ["REQUIRED", "Section", "did_you_mean", "resolve_path"]


#: Marks a key with no default: absent means a ConfigError.
REQUIRED: Any = object()


class Section:
    """Typed, checked access to one TOML table; every error names key, section and file."""

    def __init__(
        self, name: str, table: Mapping[str, Any], file: Path | None, allowed: tuple[str, ...]
    ) -> None:
        self.name, self.table, self.file, self.allowed = name, table, file, allowed
        for key in table:
            if key not in allowed:
                raise ConfigError(
                    f"unknown key {key!r} in [{name}] of {self._where()}{did_you_mean(key, allowed)}; "
                    f"allowed keys in [{name}]: {', '.join(allowed)}. Fix or remove the key."
                )

    def _where(self) -> str:
        return str(self.file) if self.file is not None else "<in-memory config>"

    def fail(self, key: str, received: object, expected: str) -> ConfigError:
        return ConfigError(
            f"[{self.name}] {key} = {received!r} in {self._where()}: expected {expected}. "
            "Fix the value in that file (keys are documented in firmware_configs/README.md)."
        )

    def _get(self, key: str, default: Any, expected: str) -> Any:
        """The raw value, or `default` when absent (a ConfigError when absent and required)."""
        if key in self.table:
            return self.table[key]
        if default is REQUIRED:
            raise ConfigError(
                f"[{self.name}] {key} is missing in {self._where()}: expected {expected}. "
                "Add it (keys are documented in firmware_configs/README.md)."
            )
        return default

    def string(self, key: str, default: Any = None, pattern: re.Pattern[str] | None = None) -> Any:
        expected = "a non-empty string" + (f" matching {pattern.pattern}" if pattern else "")
        value = self._get(key, default, expected)
        if key not in self.table:
            return value
        if not isinstance(value, str) or not value or (pattern and not pattern.fullmatch(value)):
            raise self.fail(key, value, expected)
        return value

    def boolean(self, key: str, default: Any = REQUIRED) -> bool:
        value = self._get(key, default, "true or false")
        if key in self.table and not isinstance(value, bool):
            raise self.fail(key, value, "true or false (a TOML boolean, unquoted)")
        return value

    def integer(self, key: str, default: Any = None, low: int | None = None, high: int | None = None) -> Any:
        expected = "an integer" + _range_text(low, high)
        value = self._get(key, default, expected)
        if key not in self.table:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, value, expected)
        if (low is not None and value < low) or (high is not None and value > high):
            raise self.fail(key, value, expected)
        return value

    def number(
        self,
        key: str,
        default: Any = None,
        low: float | None = None,
        high: float | None = None,
        low_open: bool = False,
    ) -> Any:
        expected = "a number" + _range_text(low, high, low_open)
        value = self._get(key, default, expected)
        if key not in self.table:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise self.fail(key, value, expected)
        too_low = low is not None and (value <= low if low_open else value < low)
        if too_low or (high is not None and value > high):
            raise self.fail(key, value, expected)
        return float(value)

    def path(self, key: str) -> Path | None:
        value = self.string(key, None)
        return None if value is None else resolve_path(value, self.file)


def _range_text(low: float | None, high: float | None, low_open: bool = False) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low}, {high}]"
    if low is not None:
        return f" {'>' if low_open else '>='} {low}"
    if high is not None:
        return f" <= {high}"
    return ""


def did_you_mean(word: str, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def resolve_path(value: str, base_file: Path | None) -> Path:
    path = Path(value).expanduser()
    if not path.is_absolute():
        base = base_file.parent if base_file is not None else Path.cwd()
        path = base / path
    return Path(os.path.normpath(path))


