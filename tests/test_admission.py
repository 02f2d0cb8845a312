"""Admission of a request from its head alone (:mod:`ocr_sse.admission`)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, MultiDict

from ocr_sse.admission import check_request
from ocr_sse.errors import Refused

LIMIT = 1000
MULTIPART = "multipart/form-data; boundary=X-BOUNDARY"


def check(
    content_type: str | None = MULTIPART,
    query: list[tuple[str, str]] | None = None,
    content_length: int | None = None,
) -> int | None:
    headers: CIMultiDict[str] = CIMultiDict()
    if content_type is not None:
        headers["Content-Type"] = content_type
    return check_request(
        headers,
        MultiDict(query or []),
        content_length=content_length,
        request_size_limit=LIMIT,
    )


def refusal(**kwargs: object) -> Refused:
    with pytest.raises(Refused) as caught:
        check(**kwargs)  # type: ignore[arg-type]
    return caught.value


# -- accepted requests -------------------------------------------------------------


def test_multipart_with_boundary_is_accepted() -> None:
    """A multipart/form-data request with a boundary is admitted."""
    assert check() is None


def test_media_type_is_case_insensitive() -> None:
    """Multipart/Form-Data in any case is multipart/form-data (RFC 9110 8.3.1)."""
    assert check("Multipart/Form-Data; boundary=abc") is None


def test_quoted_boundary_is_accepted() -> None:
    """A quoted boundary with a space, as RFC 2046 allows, is admitted."""
    assert check('multipart/form-data; boundary="a b c"') is None


def test_boundary_of_70_characters_is_accepted() -> None:
    """A boundary of exactly 70 characters, the RFC 2046 maximum, is admitted."""
    assert check("multipart/form-data; boundary=" + "b" * 70) is None


def test_content_length_at_limit_is_accepted() -> None:
    """A body of exactly the request limit is admitted."""
    assert check(content_length=LIMIT) is None


def test_unknown_content_length_is_accepted() -> None:
    """A chunked body (no Content-Length) is admitted; it is limited as it comes."""
    assert check(content_length=None) is None


def test_other_query_parameters_are_ignored() -> None:
    """Query parameters other than total_files play no part."""
    assert check(query=[("lang", "en"), ("x", "-1")]) is None


# -- 415 and 400 for the Content-Type ------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "application/json",
        "text/plain; boundary=abc",
        "multipart/mixed; boundary=abc",
        "application/x-www-form-urlencoded",
        "image/png",
        "form-data; boundary=abc",
    ],
)
def test_not_multipart_form_data_is_415(content_type: str | None) -> None:
    """A body that is not multipart/form-data is refused with 415."""
    refused = refusal(content_type=content_type)

    assert refused.status == 415
    assert refused.title == "Unsupported Media Type"
    assert "multipart/form-data" in refused.detail
    assert refused.headers == {}


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",
        "multipart/form-data;",
        "multipart/form-data; boundary=",
        'multipart/form-data; boundary=""',
        "multipart/form-data; charset=utf-8",
        "multipart/form-data; boundary=" + "b" * 71,
        "multipart/form-data; boundary=" + "b" * 500,
    ],
    ids=["bare", "semicolon", "empty", "empty-quoted", "other", "71", "500"],
)
def test_bad_boundary_is_400(content_type: str) -> None:
    """A multipart/form-data type without a 1 to 70 character boundary is 400."""
    refused = refusal(content_type=content_type)

    assert refused.status == 400
    assert refused.title == "Bad Request"
    assert refused.detail == (
        "the multipart/form-data Content-Type needs a boundary of 1 to 70 characters"
    )


@pytest.mark.parametrize(
    "boundary",
    ["\udcff\udcfe", "caf\u00e9", "a\tb", "a@b", '"a[b]"'],
    ids=["not-utf8", "not-ascii", "control", "at-sign", "brackets"],
)
def test_boundary_outside_rfc_2046_is_400(boundary: str) -> None:
    """A boundary of characters RFC 2046 does not allow is 400, not a stream."""
    refused = refusal(content_type=f"multipart/form-data; boundary={boundary}")

    assert refused.status == 400
    assert refused.detail == (
        "the boundary may hold only letters, digits, spaces and '()+_,-./:=?"
        " (RFC 2046 section 5.1.1)"
    )


def test_a_boundary_given_twice_is_400() -> None:
    """Two boundary parameters are refused: parsers differ on which one wins."""
    refused = refusal(content_type="multipart/form-data; boundary=a; boundary=b")

    assert refused.status == 400
    assert refused.detail == "the boundary is given more than once"


def test_every_rfc_2046_boundary_character_is_accepted() -> None:
    """Letters, digits, the RFC's punctuation and inner spaces are admitted."""
    boundary = '"09azAZ\'()+_,-./:=? x"'

    assert check(f"multipart/form-data; boundary={boundary}") is None


# -- 413 ---------------------------------------------------------------------------


def test_content_length_over_limit_is_413() -> None:
    """A declared body one byte over the limit is refused with 413."""
    refused = refusal(content_length=LIMIT + 1)

    assert refused.status == 413
    assert refused.title == "Content Too Large"
    assert refused.detail == "the body is 1001 bytes, over the limit of 1000 bytes"


def test_media_type_is_checked_before_size() -> None:
    """A huge body that is not multipart is 415, not 413."""
    assert refusal(content_type="text/plain", content_length=10**9).status == 415


def test_size_is_checked_before_total_files() -> None:
    """A huge body with a bad total_files is 413, the first thing wrong."""
    refused = refusal(content_length=10**9, query=[("total_files", "abc")])

    assert refused.status == 413


# -- total_files -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "count"),
    [("0", 0), ("1", 1), ("20", 20), ("007", 7), ("999999999", 999_999_999)],
)
def test_total_files_is_read(raw: str, count: int) -> None:
    """A non-negative whole total_files is returned as an int, 0 included."""
    assert check(query=[("total_files", raw)]) == count


def test_absent_total_files_is_none() -> None:
    """Without total_files the count is None: unknown, never guessed."""
    assert check(query=[]) is None


@pytest.mark.parametrize(
    "raw",
    [
        "-1",
        "1.5",
        "+1",
        " 1",
        "1 ",
        "abc",
        "",
        "1e3",
        "0x10",
        "\u0661",  # ARABIC-INDIC DIGIT ONE: a digit to str.isdigit, not a count
        "1_000",
        "9999999999",
    ],
)
def test_bad_total_files_is_400(raw: str) -> None:
    """A total_files that is not a plain non-negative integer is refused with 400."""
    refused = refusal(query=[("total_files", raw)])

    assert refused.status == 400
    assert refused.title == "Bad Request"
    assert refused.detail == (
        "total_files must be given once, as a whole number from 0 to 999999999"
    )


@pytest.mark.parametrize(
    "values", [["1", "1"], ["1", "2"], ["2", "abc"]], ids=["same", "differ", "bad"]
)
def test_repeated_total_files_is_400(values: list[str]) -> None:
    """total_files given more than once is refused with 400, even if equal."""
    refused = refusal(query=[("total_files", value) for value in values])

    assert refused.status == 400
    assert refused.detail == (
        "total_files must be given once, as a whole number from 0 to 999999999"
    )


def test_refusal_message_is_its_detail() -> None:
    """str() of a refusal is its detail, for logs."""
    refused = refusal(content_length=LIMIT + 1)

    assert str(refused) == refused.detail
