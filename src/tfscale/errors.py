"""Errors a user can act on: the CLI prints them as one line and exits 2."""

from __future__ import annotations


class TfscaleError(Exception):
    """A bad input or usage; never a bug. Printed without a traceback."""

    exit_code = 2


class ConfigError(TfscaleError):
    """A problem with an experiment file or an override, located as FILE:LINE: FIELD."""

    def __init__(
        self,
        message: str,
        field: str | None = None,
        file: str | None = None,
        line: int | None = None,
    ):
        self.message, self.field, self.file, self.line = message, field, file, line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(f"{self.file}:{self.line}" if self.line else self.file)
        if self.field:
            where.append(self.field)
        return ": ".join([*where, self.message])
