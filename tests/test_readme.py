"""The README says what the code does: commands, settings, examples."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import attrs

from ocr_sse import Config
from ocr_sse.config import ENV_PREFIX

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_opens_with_the_server_and_test_commands_ci_runs() -> None:
    """The first two commands are the server and the tests; CI runs the second."""
    commands = re.findall(r"```sh\n(.+?)\n```", README)
    assert commands[0].endswith(".venv/bin/ocr-sse")
    assert commands[1].endswith(".venv/bin/python -m pytest")
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


def test_every_setting_is_documented_with_its_variable_and_flag() -> None:
    """Each Config field has a row naming its variable and its flag."""
    for field in attrs.fields(Config):
        variable = f"`{ENV_PREFIX}{field.name.upper()}`"
        flag = "`--" + field.name.replace("_", "-") + "`"
        assert re.search(rf"\| {re.escape(variable)} \| {re.escape(flag)} \|", README)


def test_the_documented_client_test_works(tmp_path: Path) -> None:
    """The README's pytest-aiohttp example passes when pytest collects and
    runs it as a user would, with the configuration the README names."""
    (example,) = [
        block
        for block in re.findall(r"```python\n(.+?)```", README, re.DOTALL)
        if "async def test_upload" in block
    ]
    (mode,) = re.findall(r"`(asyncio_mode = \w+)`", README)
    (tmp_path / "pytest.ini").write_text(f"[pytest]\n{mode}\n")
    (tmp_path / "test_example.py").write_text(example)
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "1 passed" in ran.stdout
