"""What a multipart part is, from its headers, and where its body ends
(:mod:`ocr_sse.parts`)."""

from __future__ import annotations

import itertools

import orjson
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st
from multidict import CIMultiDict

from ocr_sse.errors import UploadFailed
from ocr_sse.events import ErrorType, ImageReceived, to_json
from ocr_sse.parts import (
    FILE_FIELD,
    MAX_FILE_NAME,
    DelimiterScanner,
    PartHead,
    read_head,
)


def head(disposition: str | None = None, **more: str) -> PartHead:
    headers: CIMultiDict[str] = CIMultiDict()
    if disposition is not None:
        headers["Content-Disposition"] = disposition
    for name, value in more.items():
        headers[name.replace("_", "-")] = value
    return read_head(headers)


# -- field and file names ------------------------------------------------------------


def test_images_part_is_a_file() -> None:
    """A part of field `images` with a file name is a file with that name."""
    part = head('form-data; name="images"; filename="receipt.jpg"')

    assert part == PartHead(field_name="images", file_name="receipt.jpg")
    assert part.is_file


def test_file_field_is_images() -> None:
    """The file field of the contract is `images`."""
    assert FILE_FIELD == "images"


def test_other_field_is_not_a_file() -> None:
    """A part of another field is not a file, even with a file name."""
    part = head('form-data; name="document"; filename="receipt.jpg"')

    assert part == PartHead(field_name="document", file_name="receipt.jpg")
    assert not part.is_file


def test_field_name_is_case_sensitive() -> None:
    """`Images` is not `images`: form field names are compared exactly."""
    assert not head('form-data; name="Images"; filename="a.png"').is_file


def test_images_part_without_file_name() -> None:
    """An `images` part without filename is a file whose name is None."""
    part = head('form-data; name="images"')

    assert part == PartHead(field_name="images", file_name=None)
    assert part.is_file


def test_token_names_need_no_quotes() -> None:
    """Unquoted token values are read as they are."""
    assert head("form-data; name=images; filename=a.png") == PartHead(
        field_name="images", file_name="a.png"
    )


def test_spaces_around_a_token_value_are_not_part_of_it() -> None:
    """An unquoted value ends before the spaces that follow it: `name=images ;`
    is the files' field."""
    part = head("form-data; name=images ; filename=a.png ")
    assert part == PartHead(field_name="images", file_name="a.png")
    assert part.is_file


def test_an_unquoted_value_runs_to_the_next_semicolon() -> None:
    """An unquoted file name with a space inside, as some clients send it,
    is read whole, up to the `;` that ends it."""
    part = head("form-data; name=images; filename=my scan.png; size=3")
    assert part == PartHead(field_name="images", file_name="my scan.png")


def test_part_without_content_disposition() -> None:
    """A part without Content-Disposition has no field and is not a file."""
    part = head()

    assert part == PartHead(field_name=None, file_name=None)
    assert not part.is_file


def test_rfc5987_file_name() -> None:
    """filename* (RFC 5987, percent-encoded UTF-8) gives the decoded name."""
    part = head("form-data; name=\"images\"; filename*=UTF-8''%E2%82%AC%20rates.png")

    assert part.file_name == "\u20ac rates.png"


def test_rfc5987_file_name_wins_over_plain() -> None:
    """With both filename and filename*, the extended filename* is used."""
    part = head(
        'form-data; name="images"; filename="fallback.png";'
        " filename*=UTF-8''%C3%A9t%C3%A9.png"
    )

    assert part.file_name == "\u00e9t\u00e9.png"


def test_rfc5987_latin1_file_name() -> None:
    """filename* in ISO-8859-1 is decoded with that charset."""
    part = head("form-data; name=\"images\"; filename*=iso-8859-1''%E9t%E9.png")

    assert part.file_name == "\u00e9t\u00e9.png"


def test_quoted_file_name_keeps_semicolon_and_spaces() -> None:
    """A quoted file name with spaces and a semicolon is read whole."""
    part = head('form-data; name="images"; filename="a b; c.png"')

    assert part.file_name == "a b; c.png"


def test_escaped_quote_in_file_name() -> None:
    """A backslash-escaped quote inside a quoted file name is a quote."""
    part = head('form-data; name="images"; filename="say \\"hi\\".png"')

    assert part.file_name == 'say "hi".png'


def test_raw_utf8_file_name() -> None:
    """A raw UTF-8 file name (as browsers send it) is read as text."""
    raw = "\u65e5\u672c\u8a9e.png".encode().decode("utf-8", "surrogateescape")
    part = head(f'form-data; name="images"; filename="{raw}"')

    assert part.file_name == "\u65e5\u672c\u8a9e.png"


def test_a_parameter_given_twice_ends_the_upload() -> None:
    """A name given twice is ambiguous (a proxy may have read the other one):
    the upload ends with MultipartParsingError rather than guess."""
    with pytest.raises(UploadFailed) as caught:
        head('form-data; name="images"; name="other"')

    assert caught.value.error_type is ErrorType.MULTIPART_PARSING
    assert str(caught.value) == "a part's Content-Disposition gives name twice"


@pytest.mark.parametrize(
    ("disposition", "name"),
    [
        ('form-data; name="images"; filename="a.png', "filename"),
        ('form-data; name="images', "name"),
        ('form-data; name="images"; filename="a\\"', "filename"),
        ('form-data; name="images"; filename="', "filename"),
    ],
)
def test_a_quote_never_closed_ends_the_upload(disposition: str, name: str) -> None:
    """A quoted value with no closing quote is not read as a token, which
    would cut its last character: the upload ends with MultipartParsingError."""
    with pytest.raises(UploadFailed) as caught:
        head(disposition)

    assert caught.value.error_type is ErrorType.MULTIPART_PARSING
    assert str(caught.value) == (
        f"a part's Content-Disposition never closes the quote of {name}"
    )


@pytest.mark.parametrize(
    ("disposition", "field", "file_name"),
    [
        ('form-data; name="images"; filename="a;b.png"', "images", "a;b.png"),
        ('form-data; NAME="images"; FileName="x.png"', "images", "x.png"),
        ("form-data; name=images; filename=plain.png", "images", "plain.png"),
        (
            'form-data; name="images"; filename="q\\"uote\\\\.png"',
            "images",
            'q"uote\\.png',
        ),
        ('form-data; name="images"; filename=""', "images", ""),
        (
            "form-data; name=\"images\"; filename*=iso-8859-1''caf%E9.png",
            "images",
            "caf\u00e9.png",
        ),
        (
            'form-data; name=images; filename="fallback.png";'
            " filename*=UTF-8''%E2%82%AC.png",
            "images",
            "\u20ac.png",
        ),
        ("form-data", None, None),
        ("", None, None),
    ],
)
def test_disposition_parameters_follow_rfc_6266(
    disposition: str, field: str | None, file_name: str | None
) -> None:
    """Quoted strings with escapes and semicolons, tokens, names in any case,
    and filename* over filename."""
    assert head(disposition) == PartHead(field_name=field, file_name=file_name)


# -- encodings -------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["Content-Transfer-Encoding", "Content-Encoding"])
@pytest.mark.parametrize(
    "value", ["", "binary", "8bit", "7bit", "identity", "BINARY", " 8Bit "]
)
def test_identity_encodings_are_accepted(header: str, value: str) -> None:
    """Encodings that leave the bytes as they are, in any case, are accepted."""
    headers = CIMultiDict(
        {"Content-Disposition": 'form-data; name="images"; filename="a.png"'}
    )
    headers[header] = value

    assert read_head(headers) == PartHead(field_name="images", file_name="a.png")


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("Content-Transfer-Encoding", "base64"),
        ("Content-Transfer-Encoding", "quoted-printable"),
        ("Content-Transfer-Encoding", "BASE64"),
        ("Content-Encoding", "gzip"),
        ("Content-Encoding", "deflate"),
        ("Content-Encoding", "br"),
    ],
)
def test_encoded_part_fails_the_upload(header: str, value: str) -> None:
    """A base64 or compressed part ends the upload with MultipartParsingError."""
    headers = CIMultiDict(
        {"Content-Disposition": 'form-data; name="images"; filename="a.png"'}
    )
    headers[header] = value

    with pytest.raises(UploadFailed) as caught:
        read_head(headers)

    assert caught.value.error_type is ErrorType.MULTIPART_PARSING
    assert caught.value.message == (
        f"a part has {header}: {value.lower()}; multipart/form-data parts must"
        " carry their bytes as they are"
    )


def test_encoded_part_message_is_capped() -> None:
    """A huge encoding header is cut to 40 characters in the message."""
    with pytest.raises(UploadFailed) as caught:
        head('form-data; name="images"', Content_Encoding="x" * 5000)

    assert "x" * 40 + ";" in caught.value.message
    assert "x" * 41 not in caught.value.message


def test_encoding_of_bytes_that_are_not_utf8_is_quoted_as_replacements() -> None:
    """Lone surrogates (header bytes not in UTF-8) show as U+FFFD: JSON-safe."""
    with pytest.raises(UploadFailed) as caught:
        head('form-data; name="images"', Content_Transfer_Encoding="x\udcff")

    assert caught.value.message.startswith(
        "a part has Content-Transfer-Encoding: x\ufffd;"
    )


def test_encoding_is_refused_on_non_file_parts_too() -> None:
    """An encoded non-file field also fails the upload: it is never decoded."""
    with pytest.raises(UploadFailed):
        head('form-data; name="note"', Content_Encoding="gzip")


# -- names that are echoed back ------------------------------------------------------


def test_long_file_name_is_capped_at_255_characters() -> None:
    """A 10000-character file name is cut to its first 255 characters."""
    name = "n" * 9996 + ".png"
    part = head(f'form-data; name="images"; filename="{name}"')

    assert MAX_FILE_NAME == 255
    assert part.file_name == "n" * 255


def test_file_name_of_255_characters_is_kept() -> None:
    """A file name of exactly 255 characters is kept whole."""
    name = "m" * 251 + ".png"

    assert head(f'form-data; name="images"; filename="{name}"').file_name == name


def test_long_name_is_cut_by_characters_not_bytes() -> None:
    """A name of 300 euro signs keeps 255 whole characters, none split."""
    part = head("form-data; name=images; filename*=UTF-8''" + "%E2%82%AC" * 300)

    assert part.file_name == "\u20ac" * 255


def test_undecodable_header_bytes_become_replacement_characters() -> None:
    """Header bytes that are not UTF-8 (lone surrogates) become U+FFFD."""
    raw = b"caf\xe9 \xff.png".decode("utf-8", "surrogateescape")

    part = head(f'form-data; name="images"; filename="{raw}"')

    assert part.file_name == "caf\ufffd \ufffd.png"


@pytest.mark.parametrize(
    "encoded",
    ["utf-7''a%2B2AA-b.png", "unicode_escape''a%5Cud800b.png", "rot13''n.png"],
    ids=["utf-7", "unicode-escape", "rot13"],
)
def test_filename_star_in_another_charset_is_not_decoded(encoded: str) -> None:
    """Only UTF-8 and ISO-8859-1 filename* values are decoded (RFC 8187):
    a codec a client names is never run, and filename is used instead."""
    part = head(f'form-data; name="images"; filename*={encoded}')
    assert part.file_name is None

    part = head(f'form-data; name="images"; filename="plain.png"; filename*={encoded}')
    assert part.file_name == "plain.png"


def test_cleaned_file_name_can_be_sent_as_json() -> None:
    """A file name with undecodable bytes can be written in an event."""
    raw = b"\xed\xa0\x80\xff".decode("utf-8", "surrogateescape")
    name = head(f'form-data; name="images"; filename="{raw}"').file_name

    data = to_json(ImageReceived(file_index=0, file_name=name, size_bytes=1))

    assert orjson.loads(data)["data"]["file_name"] == "\ufffd" * 4


# -- where a part's body ends ------------------------------------------------------


DASH_BOUNDARY = b"--testboundary1234"
DELIMITER = b"\r\n" + DASH_BOUNDARY

# Bodies made of what can be mistaken for a delimiter's start.
near_misses = (
    st.lists(
        st.sampled_from(
            [b"\r", b"\n", b"-", b"x", b"\r\n--", DELIMITER[:9], DELIMITER[:-1]]
        )
    )
    .map(b"".join)
    .filter(lambda body: DELIMITER not in body)
)


@given(
    body=st.one_of(near_misses, st.binary()),
    after=st.binary(max_size=20),
    cuts=st.lists(st.integers(0, 300), max_size=12),
    # What precedes the part in its first chunk: the previous part's end.
    lead=st.sampled_from([b"", b"x", b"prev" + DELIMITER + b"\r\nheaders\r\n\r\n"]),
)
# The delimiter cut one byte short of its end, as early in a chunk as it can be.
@example(body=b"x", after=b"", cuts=[len(DELIMITER)], lead=b"")
# The delimiter over three chunks, the middle one too short to decide.
@example(body=b"x", after=b"", cuts=[9, 12], lead=b"")
# Its CR held back, then all of it but its last byte: still too short.
@example(body=b"x", after=b"", cuts=[2, 20], lead=b"")
def test_scanner_gives_back_the_body_and_where_the_delimiter_ends(
    body: bytes, after: bytes, cuts: list[int], lead: bytes
) -> None:
    """However the bytes are cut, and from wherever in a chunk they are
    fed, the scanner gives back exactly the part's body, and the end of
    its delimiter as soon as the chunk holding it is fed, no later."""
    assume(DELIMITER not in body)
    stream = body + DELIMITER + after
    ends = sorted({min(cut, len(stream)) for cut in cuts} | {len(stream)})
    chunks = [stream[a:b] for a, b in itertools.pairwise([0, *ends])]
    scanner = DelimiterScanner(DASH_BOUNDARY)
    pending = iter(chunks)
    got, fed, end = b"", 0, None
    while end is None:
        chunk = next(pending)
        data, end = scanner.feed(lead + chunk, len(lead))
        got += b"".join(data)
        fed += len(chunk)
    assert got == body
    assert fed - len(chunk) < len(body) + len(DELIMITER) <= fed
    assert (lead + chunk)[end:] + b"".join(pending) == after


def test_a_chunk_of_body_only_comes_back_as_itself() -> None:
    """A chunk that is all body, the common case of a large file, is handed
    on as the very same object: not one byte copied."""
    chunk = b"x" * 1000
    data, end = DelimiterScanner(DASH_BOUNDARY).feed(chunk)
    assert end is None and len(data) == 1 and data[0] is chunk


def test_data_from_an_offset_is_a_view_of_the_chunk() -> None:
    """A part that starts inside a chunk gets a view of it, not a copy."""
    chunk = b"headers\r\n\r\n" + b"x" * 100 + DELIMITER + b"\r\n"
    data, end = DelimiterScanner(DASH_BOUNDARY).feed(chunk, 11)
    assert [bytes(piece) for piece in data] == [b"x" * 100]
    assert isinstance(data[0], memoryview) and data[0].obj is chunk
    assert chunk[end:] == b"\r\n"
