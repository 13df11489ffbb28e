"""The verification snippets in docs/webhooks.md agree with partners.webhooks.verify.

Partners copy those snippets, so each one is run here on the same headers as the library and
must reach the same verdict. The Node.js snippet needs `node` on PATH: without it that test is
skipped, except under CI=true, where it fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from partners.webhooks import WebhookSignatureError, sign, verify

DOCS = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"
NODE_TIMEOUT_S = 30
SECRET = b"whsec_docs_test_0123456789abcdef"
OTHER = b"whsec_docs_other_fedcba9876543210"
BODY = b'{"code":"ABCD-EFGH-JKMN-PQR7","member":"members/m1"}'
# Far from the 300 s tolerance either way, so the clock moving during the test cannot matter.
SKEW_S = 1_000
NODE_DRIVER = """
let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const results = JSON.parse(input).map(([secret, header, body]) => {
    try {
      return verifyCoalitionSignature(secret, header, Buffer.from(body, "utf8"));
    } catch (err) {
      return err.message;
    }
  });
  process.stdout.write(JSON.stringify(results));
});
"""


def snippet(heading: str, language: str) -> str:
    """The first fenced `language` block after `heading` in docs/webhooks.md."""
    text = DOCS.read_text()
    start = text.index(heading)
    found = re.compile(rf"```{language}\n(.*?)```", re.DOTALL).search(text, start)
    assert found is not None, f"no {language} block after {heading!r}"
    return found.group(1)


def cases() -> list[tuple[bytes, str, bytes]]:
    """(secret, header, body): genuine, forged, stale and malformed deliveries."""
    now = int(time.time())
    good = sign(SECRET, BODY, now).split(",")[1]
    return [
        (SECRET, sign(SECRET, BODY, now), BODY),
        (SECRET, sign(SECRET, BODY, now), BODY + b" "),
        (OTHER, sign(SECRET, BODY, now), BODY),
        (SECRET, sign(SECRET, BODY, now - SKEW_S), BODY),
        (SECRET, sign(SECRET, BODY, now + SKEW_S), BODY),
        (SECRET, f"t={now},v1=00,{good}", BODY),
        (SECRET, f"t={now}, v0=00, {good}", BODY),
        (SECRET, f"t={now},v0={good[3:]}", BODY),
        (SECRET, f"t={now - SKEW_S},{good}", BODY),
        (SECRET, "", BODY),
        (SECRET, good, BODY),
        (SECRET, f"t={now}", BODY),
        (SECRET, f"t=soon,{good}", BODY),
        (SECRET, f"t=１２３,{good}", BODY),
        (SECRET, f"t={now},t={now},{good}", BODY),
        (SECRET, f"t={now},{good},", BODY),
        (SECRET, f"t={now},v1=é{good[4:]}", BODY),
    ]


def verdict(check: Callable[[bytes, str, bytes], int], case: tuple[bytes, str, bytes]) -> object:
    try:
        return check(*case)
    except WebhookSignatureError as err:
        return err.reason
    except ValueError as err:  # the snippet's own error class
        return getattr(err, "reason", str(err))


def library(secret: bytes, header: str, body: bytes) -> int:
    return verify(secret, header, body)


def test_the_python_snippet_agrees_with_the_library() -> None:
    namespace: dict[str, object] = {}
    exec(snippet("### Python", "python"), namespace)
    documented = namespace["verify"]
    assert callable(documented)

    for case in cases():
        assert verdict(documented, case) == verdict(library, case), case[1]


def node_or_skip() -> str:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI") == "true":
            pytest.fail("`node` is not on PATH: CI must run the Node.js snippet")
        pytest.skip("`node` is not on PATH (install Node.js 20+)")
    return node


async def test_the_node_snippet_agrees_with_the_library(tmp_path: Path) -> None:
    script = tmp_path / "verify.js"
    script.write_text(snippet("### Node.js", "js") + NODE_DRIVER)
    checked = cases()
    payload = [[s.decode(), header, body.decode()] for s, header, body in checked]

    process = await asyncio.create_subprocess_exec(
        node_or_skip(),
        str(script),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(
        process.communicate(json.dumps(payload).encode()), NODE_TIMEOUT_S
    )
    assert process.returncode == 0, stderr.decode()

    for case, result in zip(checked, json.loads(stdout), strict=True):
        assert result == verdict(library, case), case[1]
