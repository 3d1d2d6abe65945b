"""Under JSON logging nothing is loose text: an uncaught error's traceback is a field of a JSON line."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import ROOT


def test_an_uncaught_traceback_is_a_json_field() -> None:
    code = (
        "from worker.logs import configure_logging\n"
        "configure_logging('INFO', 'json')\n"
        "raise RuntimeError('boom')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    (line,) = [json.loads(text) for text in result.stderr.splitlines()]
    assert (line["level"], line["message"]) == ("CRITICAL", "uncaught RuntimeError: boom")
    assert line["exc_info"].startswith("Traceback (most recent call last):")
    assert line["exc_info"].endswith("RuntimeError: boom")
