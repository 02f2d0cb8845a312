"""A file over its chunks (:mod:`ocr_sse.buffers`): reads as the joined bytes would."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from ocr_sse.buffers import open_chunks

from . import images

#: Chunks as a part's data comes: bytes, or views into a larger chunk.
CHUNKS = st.lists(
    st.binary(max_size=40)
    | st.tuples(st.binary(max_size=40), st.integers(0, 10), st.integers(0, 10)).map(
        lambda cut: memoryview(cut[0])[cut[1] : len(cut[0]) - cut[2]]
    ),
    max_size=8,
)
#: What a reader may do: read n bytes (None: to the end), or seek.
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("read"), st.none() | st.integers(-1, 120)),
        st.tuples(
            st.just("seek"),
            st.tuples(st.integers(0, 150), st.just(io.SEEK_SET))
            | st.tuples(st.integers(-30, 30), st.just(io.SEEK_CUR))
            | st.tuples(st.integers(-150, 10), st.just(io.SEEK_END)),
        ),
    ),
    max_size=12,
)


@given(chunks=CHUNKS, operations=OPERATIONS)
def test_reads_and_seeks_as_the_joined_bytes_do(
    chunks: list[bytes | memoryview], operations: list[tuple[str, object]]
) -> None:
    """Any mix of reads and seeks returns what it returns on one joined file;
    a seek before the start is refused and moves nothing."""
    data = b"".join(chunks)
    ours, joined = open_chunks(chunks), io.BytesIO(data)
    for name, argument in operations:
        if name == "read":
            assert ours.read(argument) == joined.read(argument)  # type: ignore[arg-type]
        else:
            offset, whence = argument  # type: ignore[misc]
            base = {io.SEEK_SET: 0, io.SEEK_CUR: joined.tell(), io.SEEK_END: len(data)}
            if base[whence] + offset < 0:
                with pytest.raises(OSError):
                    ours.seek(offset, whence)
            else:
                assert ours.seek(offset, whence) == joined.seek(offset, whence)
        assert ours.tell() == joined.tell()


def test_a_read_spans_chunks_and_stops_at_the_end() -> None:
    """One read gathers bytes from several chunks; past the end it is empty."""
    file = open_chunks([b"ab", b"", b"cde", b"f"])

    assert file.read(4) == b"abcd"
    assert file.read(10) == b"ef"
    assert file.read(1) == b""
    assert file.seek(0) == 0
    assert file.read() == b"abcdef"


def test_a_negative_seek_is_refused() -> None:
    """Seeking before the start is an OSError, as on a real file."""
    file = open_chunks([b"abc"])

    with pytest.raises(OSError):
        file.seek(-1)


def test_a_closed_file_cannot_be_read() -> None:
    """Reads after close() fail like any closed file's."""
    file = open_chunks([b"abc"])
    file.close()

    with pytest.raises(ValueError, match="closed file"):
        file.read()


def test_pillow_decodes_an_image_from_its_chunks() -> None:
    """A JPEG split into network-sized chunks decodes as it does whole."""
    data = images.noise_jpeg(width=300, height=200)
    chunks = [data[i : i + 7000] for i in range(0, len(data), 7000)]

    with Image.open(open_chunks(chunks)) as image:
        image.load()
        assert image.size == (300, 200)
