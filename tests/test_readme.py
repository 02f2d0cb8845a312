"""The README says what the code does: commands, settings, examples."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

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


async def test_the_documented_client_test_works(aiohttp_client: Any) -> None:
    """The README's pytest-aiohttp example runs as written."""
    (example,) = [
        block
        for block in re.findall(r"```python\n(.+?)```", README, re.DOTALL)
        if "async def test_upload" in block
    ]
    namespace: dict[str, Any] = {}
    exec(compile(example, "README.md", "exec"), namespace)
    await namespace["test_upload"](aiohttp_client)
