"""The restore script is fitted to the target server: only the preamble's SET lines of settings the server does not
know are left out, byte for byte, however the script arrives in pieces; nothing after the preamble is touched."""

from __future__ import annotations

import pytest

from runner.pgscript import LINE_LIMIT, PreambleFilter, unknown_settings

NEW_SET = b"SET transaction_timeout = 0;\n"

# What pg_restore 17 writes for `pg_restore --single-transaction -f -` (shortened): the preamble, which sets up the
# session, then the objects, where the same line appears once in a function body, once as a COPY row, and once as a
# statement of its own after the preamble.
SCRIPT = rb"""--
-- PostgreSQL database dump
--

\restrict 3pJxQGbpUHBAZ6Qyk7jlnMOdDWhV3BIQjzhbM2eBMSWS8kN7DRB9F6hVwsr3GZp

-- Dumped from database version 15.13 (Debian 15.13-1.pgdg120+1)
-- Dumped by pg_dump version 17.6 (Debian 17.6-1.pgdg120+1)

BEGIN;

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET transaction_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: f(); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.f() RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
SET transaction_timeout = 0;
END$$;

SET default_tablespace = '';

CREATE TABLE public.t (v text);

--
-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: postgres
--

COPY public.t (v) FROM stdin;
SET transaction_timeout = 0;
\.


SET transaction_timeout = 0;
COMMIT;

--
-- PostgreSQL database dump complete
--

\unrestrict 3pJxQGbpUHBAZ6Qyk7jlnMOdDWhV3BIQjzhbM2eBMSWS8kN7DRB9F6hVwsr3GZp

"""
FITTED = SCRIPT.replace(NEW_SET, b"", 1)  # the first one is the preamble's


def run(script: bytes, server_version: int, piece: int | None = None) -> tuple[bytes, PreambleFilter]:
    fitted = PreambleFilter(unknown_settings(server_version))
    size = piece or len(script) or 1
    out = b"".join(fitted.feed(script[i : i + size]) for i in range(0, len(script), size))
    return out + fitted.flush(), fitted


@pytest.mark.parametrize(
    ("server_version", "expected"),
    [
        pytest.param(120022, FITTED, id="12"),
        pytest.param(150013, FITTED, id="15"),
        pytest.param(169999, FITTED, id="16"),
        pytest.param(170000, SCRIPT, id="17.0"),
        pytest.param(170006, SCRIPT, id="17"),
        pytest.param(180001, SCRIPT, id="18"),
    ],
)
def test_the_preambles_set_of_a_setting_the_server_does_not_know_is_left_out(
    server_version: int, expected: bytes
) -> None:
    out, fitted = run(SCRIPT, server_version)
    assert out == expected
    assert fitted.dropped == (["transaction_timeout"] if expected is FITTED else [])


def test_a_copy_row_a_function_body_and_anything_after_the_preamble_are_never_touched() -> None:
    out, _ = run(SCRIPT, 150013)
    copy = b"COPY public.t (v) FROM stdin;\n" + NEW_SET + b"\\.\n"
    body = b"AS $$\nBEGIN\n" + NEW_SET + b"END$$;\n"
    later = b"\n\n" + NEW_SET + b"COMMIT;\n"
    assert copy in out
    assert body in out
    assert later in out
    assert out.count(NEW_SET) == SCRIPT.count(NEW_SET) - 1 == 3


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 29, 64, 4096])
def test_a_line_split_across_reads_is_judged_whole(piece: int) -> None:
    assert run(SCRIPT, 150013, piece)[0] == FITTED
    assert run(SCRIPT, 170006, piece)[0] == SCRIPT


@pytest.mark.parametrize(
    "line",
    [
        b"SET transaction_timeout TO 0;\n",
        b"SET transaction_timeout = 0; SELECT 1;\n",
        b" SET transaction_timeout = 0;\n",
        b"SET  transaction_timeout = 0;\n",
        b"set transaction_timeout = 0;\n",
        b"SET transaction_timeout = 0;\r\n",
        b"SET LOCAL transaction_timeout = 0;\n",
        b"SET transaction_timeout_x = 0;\n",
    ],
)
def test_only_a_line_that_is_exactly_the_set_is_dropped(line: bytes) -> None:
    script = SCRIPT.replace(NEW_SET, line, 1)
    assert run(script, 150013)[0] == script


def test_the_last_line_without_a_newline_is_judged_too() -> None:
    assert run(b"BEGIN;\n" + NEW_SET.rstrip(b"\n"), 150013)[0] == b"BEGIN;\n"


def test_a_line_too_long_for_a_preamble_ends_it_and_passes_without_being_held() -> None:
    long_comment = b"-- " + b"x" * LINE_LIMIT
    fitted = PreambleFilter(unknown_settings(150013))
    first = fitted.feed(b"BEGIN;\n" + long_comment)
    assert first == b"BEGIN;\n" + long_comment, "nothing of the long line is held back"
    rest = fitted.feed(b"\n" + NEW_SET) + fitted.flush()
    assert rest == b"\n" + NEW_SET, "after the preamble, nothing is dropped"


def test_for_a_server_that_knows_every_setting_the_script_passes_as_it_is() -> None:
    fitted = PreambleFilter(unknown_settings(170006))
    piece = SCRIPT[:10]
    assert fitted.feed(piece) is piece
