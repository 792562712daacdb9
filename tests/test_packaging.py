"""The partner SDK installs without the server: ``pip install exchange-gateway`` (no extras)
gives ``gateway.client``, ``gateway.fieldcrypto`` and the partner commands; the server needs
``exchange-gateway[server]``."""

from __future__ import annotations

import subprocess
import sys

SERVER_ONLY = (
    "fastapi", "starlette", "uvicorn", "authlib", "redis", "prometheus_client",
    "jinja2", "argon2", "pydantic_settings", "confluent_kafka", "anyio", "jsonschema_rs",
)  # fmt: skip

WITHOUT_THE_SERVER = f"""
import sys

class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {SERVER_ONLY!r}:
            raise ImportError(f"{{name}} is not installed")

sys.meta_path.insert(0, Absent())
import gateway.client, gateway.fieldcrypto
from gateway.cli import main
for command in (["token", "--help"], ["consume", "--help"]):
    main(command, standalone_mode=False)
"""


def test_the_partner_sdk_and_commands_need_none_of_the_server() -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_THE_SERVER], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "--checkpoint" in result.stdout


def test_the_server_raises_its_open_files_limit_to_the_hard_limit() -> None:
    """Every stream holds a socket: 10,000 streams need more than the usual soft limit of 1,024.
    In a child process, so the test run keeps its own limit."""
    code = (
        "import resource\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))\n"
        "from gateway.server import raise_open_files_limit\n"
        "raise_open_files_limit()\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard) or hard == -1)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "True", done.stderr
