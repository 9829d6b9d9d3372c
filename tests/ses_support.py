"""A real local SES stand-in for the ses provider's tests: moto's `moto_server` process on
127.0.0.1, with the fake ESP's SES front (tests/esp_server.py) in front of it, so the fault
matrix's faults apply to SES as to every other ESP.

    def test_x(ses_moto):   # the fake ESP forwards /v2/email/... to a fresh moto
        ...                 # esp_server.moto_messages(ses_moto): the raw messages moto got
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from esp_server import FakeEsp

SENDER_DOMAIN = "tinybigspark.com"  # the sample newsletter's `from`
REGION = "eu-west-1"  # boto3's region in these tests (moto keeps one backend per region)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto_server on 127.0.0.1 (a free port), for the whole session; its URL."""
    executable = Path(sys.executable).parent / "moto_server"
    if not executable.exists():
        pytest.skip("moto[server] is not installed (pip install -e '.[test]')")
    proc = subprocess.Popen(
        [str(executable), "-H", "127.0.0.1", "-p", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    # Its output is read in a thread: select() on a buffered pipe misses lines already read
    # into the buffer, and moto prints two at once.
    threading.Thread(
        target=lambda: [lines.put(line) for line in proc.stdout or []], daemon=True
    ).start()
    url = ""
    deadline = time.monotonic() + 60
    while not url and time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if "Running on http://127.0.0.1:" in line:
            url = line.split("Running on ", 1)[1].split()[0].rstrip("/")
    if not url:
        proc.kill()
        proc.wait()
        pytest.fail("moto_server did not start within 60 s")
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def reset_moto(url: str) -> None:
    """Forget every message and identity, then verify the sample newsletter's domain."""
    request = urllib.request.Request(f"{url}/moto-api/reset", method="POST", data=b"")
    urllib.request.urlopen(request, timeout=10).close()
    verify_identity(url, SENDER_DOMAIN)


def verify_identity(url: str, domain: str) -> None:
    """Verify a sending identity in the SES stand-in (as SES's console would)."""
    body = json.dumps({"EmailIdentity": domain}).encode()
    identity = urllib.request.Request(
        f"{url}/v2/email/identities",
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            # moto reads the region from the signature's scope; it does not check it
            "Authorization": f"AWS4-HMAC-SHA256 Credential=test/20250101/{REGION}/ses/"
            "aws4_request, SignedHeaders=host, Signature=0",
        },
    )
    urllib.request.urlopen(identity, timeout=10).close()


@pytest.fixture
def ses_moto(esp: FakeEsp, moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The fake ESP's SES front forwarding to a fresh moto; AWS credentials for boto3's
    chain in the environment only (no ~/.aws files, no instance metadata lookups)."""
    reset_moto(moto_server)
    esp.ses.upstream = moto_server
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", esp.ses.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "ses-test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return moto_server
