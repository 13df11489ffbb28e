"""A client that is not ours: Node's @grpc/grpc-js loading proto/coalition/v1/*.proto at run time.

Needs Node.js and the client's packages:

    npm ci --prefix tests/e2e/node

Without them the test is skipped, except under CI=true, where it fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).resolve().parent / "node"
CLIENT = NODE_DIR / "client.js"
INSTALL = "npm ci --prefix tests/e2e/node"
TIMEOUT_S = 60
INVALID_ARGUMENT = 3

LOYALTY_NUMBER = re.compile(r"\d{12}")
E164 = re.compile(r"\+[1-9]\d{1,14}")


def node_client() -> str:
    """Path of the `node` executable once node and the client's node_modules are installed.

    Otherwise skips the test with the command to run, or fails it when CI is set: CI must run
    the test, so it must install them.
    """
    node = shutil.which("node")
    missing = []
    if node is None:
        missing.append("`node` is not on PATH (install Node.js 20+)")
    for package in ("@grpc/grpc-js", "@grpc/proto-loader"):
        if not (NODE_DIR / "node_modules" / package / "package.json").is_file():
            missing.append(f"{package} is not installed in {NODE_DIR / 'node_modules'}")
    if not missing:
        assert node is not None
        return node
    reason = "; ".join(missing) + f"; run `{INSTALL}` from the repository root"
    if os.environ.get("CI"):
        pytest.fail(f"CI must install the Node client: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.mark.node
async def test_node_grpc_js_client_enrolls_and_finds_a_member(gateway) -> None:
    node = node_client()
    _, key = await gateway.create_partner("node-hotel", "HOTEL")

    proc = await asyncio.create_subprocess_exec(
        node,
        str(CLIENT),
        gateway.target,
        key,
        cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"node client.js did not finish within {TIMEOUT_S} s")
    assert proc.returncode == 0, (
        f"node client.js exited {proc.returncode}\n"
        f"stdout: {stdout.decode()}\nstderr: {stderr.decode()}"
    )
    result = json.loads(stdout)

    enrolled = result["enrolled"]
    assert result["by_loyalty"] == enrolled
    assert result["by_phone"] == enrolled
    assert enrolled["display_name"] == "Grace Hopper (node e2e)"
    assert LOYALTY_NUMBER.fullmatch(enrolled["loyalty_number"])
    assert E164.fullmatch(enrolled["phone_number"])
    assert enrolled["phone_number"].startswith("+1415555")
    assert enrolled["name"].startswith("members/")

    bad = result["bad_check_digit"]
    assert bad["code"] == INVALID_ARGUMENT, bad
    assert bad["details"], bad
    assert bad["reason"] == "INVALID_LOYALTY_NUMBER", bad
    assert bad["domain"] == "coalition.v1", bad
