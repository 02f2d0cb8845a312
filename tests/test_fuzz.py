"""Fuzzing: mutated multipart bodies never break the server or the stream.

Every response must be a 4xx refusal or an event stream that starts with
``upload_started`` and ends with exactly one terminal event; the server must
still answer ``/healthz`` afterwards.  The default run is short; set
``OCR_SSE_FUZZ_EXAMPLES`` (e.g. 5000) to fuzz for longer.
"""

from __future__ import annotations

import http.client
import os
from collections.abc import Iterator

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from . import images
from .test_main import running_server
from .wire import BOUNDARY, CONTENT_TYPE, frames, multipart, read_events

EXAMPLES = int(os.environ.get("OCR_SSE_FUZZ_EXAMPLES", "60"))

TERMINAL = {"processing_complete", "processing_error"}

SAMPLES = [
    images.png(width=20, height=20),
    images.jpeg(width=20, height=20),
    images.truncated(images.png(width=40, height=40)),
    b"%PDF-1.4\n",
    b"",
    b"\r\n--" + BOUNDARY.encode() + b"\r\n",  # a delimiter inside a file
]


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    """One real server for the whole module, with small limits to reach."""
    with running_server(
        "--max-file-size", "2000", "--max-files", "3", "--max-parts", "8",
        "--max-field-size", "500", "--read-timeout", "2",
    ) as url:  # fmt: skip
        yield int(url.rpartition(":")[2])


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    except OSError:
        return 0, b""
    finally:
        connection.close()


def post(port: int, body: bytes) -> tuple[int, str, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        connection.request(
            "POST", "/api/ocr", body=body, headers={"Content-Type": CONTENT_TYPE}
        )
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


parts = st.lists(
    st.tuples(
        st.sampled_from(["images", "images", "note", ""]),
        st.one_of(st.none(), st.text(max_size=30)),
        st.one_of(st.sampled_from(SAMPLES), st.binary(max_size=300)),
    ),
    max_size=5,
)


@st.composite
def mutated_bodies(draw: st.DrawFn) -> bytes:
    body = multipart(
        (field, None if name is None else name.replace('"', ""), data)
        for field, name, data in draw(parts)
    )
    for _ in range(draw(st.integers(0, 3))):
        mutation = draw(
            st.sampled_from(["truncate", "flip", "insert", "drop", "repeat", "header"])
        )
        at = draw(st.integers(0, len(body)))
        if mutation == "truncate":
            body = body[:at]
        elif mutation == "flip" and body:
            at = min(at, len(body) - 1)
            body = (
                body[:at]
                + bytes([body[at] ^ draw(st.integers(1, 255))])
                + body[at + 1 :]
            )
        elif mutation == "insert":
            body = body[:at] + draw(st.binary(min_size=1, max_size=40)) + body[at:]
        elif mutation == "drop":
            body = body.replace(f"--{BOUNDARY}".encode(), b"", draw(st.integers(1, 2)))
        elif mutation == "repeat":
            line = f"--{BOUNDARY}\r\n".encode()
            body = body[:at] + line * draw(st.integers(1, 3)) + body[at:]
        elif mutation == "header":
            header = (
                b"X-Big: " + b"h" * draw(st.sampled_from([100, 8000, 20000])) + b"\r\n"
            )
            first = body.find(b"\r\n") + 2
            body = body[:first] + header + body[first:]
    return body


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(body=mutated_bodies())
def test_mutated_bodies_get_a_refusal_or_a_stream_with_one_ending(
    port: int, body: bytes
) -> None:
    """Whatever the body, the answer is a 4xx problem or a well-framed stream
    with upload_started first and exactly one terminal event, last."""
    status, content_type, raw = post(port, body)
    assert status != 500 and b"Traceback" not in raw
    if 400 <= status < 500:
        assert content_type == "application/problem+json"
        assert orjson.loads(raw)["status"] == status
        return
    assert status == 200 and content_type == "text/event-stream"
    frames(raw)  # every byte is part of a frame
    kinds = [kind for kind, _ in read_events(raw)]
    assert kinds[0] == "upload_started" and kinds.count("upload_started") == 1
    assert kinds[-1] in TERMINAL
    assert sum(kind in TERMINAL for kind in kinds) == 1


def test_every_empty_body_ends_its_stream(port: int) -> None:
    """Empty bodies one after another each end with processing_error; aiohttp
    reads them all with one shared reader, which changes after its first use."""
    for _ in range(3):
        status, _, raw = post(port, b"")
        assert status == 200
        assert read_events(raw)[-1][1]["error_message"] == (
            "malformed multipart body: no boundary in the first 1024 bytes"
        )


def test_the_server_is_healthy_after_the_fuzzing(port: int) -> None:
    """After every mutated body, the server still answers /healthz."""
    assert get(port, "/healthz") == (200, b'{"status": "ok"}')
