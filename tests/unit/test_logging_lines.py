"""Each log line reaches stderr in one write, so processes sharing it cannot interleave."""

from __future__ import annotations

import io
import sys

import pytest
import structlog

from asyncworker.logging import configure, get_logger


class Recorder(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return super().write(text)


def test_a_log_line_is_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder()
    monkeypatch.setattr(sys, "stderr", recorder)
    configure("INFO", "json")
    try:
        get_logger("t").info("first", n=1)
        get_logger("t").info("second", n=2)
    finally:
        structlog.reset_defaults()
    lines = [call for call in recorder.calls if call]
    assert len(lines) == 2 and all(line.endswith("\n") and line.count("\n") == 1
                                   for line in lines)
    assert '"first"' in lines[0] and '"second"' in lines[1]
