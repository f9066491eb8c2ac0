"""Unit tests of reading dumps: the plain-script guard (psql meta-commands, COPY data,
tolerated statements), gzip streams, the archive header, format sniffing, and backup key
patterns. No stack needed."""

from __future__ import annotations

import datetime as dt
import gzip
import random
import struct
import tracemalloc
from collections.abc import Iterable

import pytest

from opsready.backup_keys import KeyPattern, KeyPatternError
from opsready.probes.dumps import (
    DumpProblem,
    GzipStream,
    HostileDump,
    PlainScriptGuard,
    parse_archive_header,
    sniff,
)
from opsready.probes.postgres import psql_has_restricted_mode

# A plain dump as pg_dump 15.14+ writes it (abridged): \restrict pair, SET lines, a function
# with backslashes in its body, COPY data with backslash escapes, and the trailer.
PLAIN = b"""--
-- PostgreSQL database dump
--

\\restrict Xy12ab34

-- Dumped from database version 15.18
-- Dumped by pg_dump version 15.18

SET statement_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);

CREATE FUNCTION public.slug(t text) RETURNS text
    LANGUAGE sql
    AS $_$ SELECT regexp_replace(t, '[^a-z\\d]+', '-', 'g') $_$;

ALTER FUNCTION public.slug(t text) OWNER TO relay_admin;

CREATE TABLE public.notes (
    id integer NOT NULL,
    body text DEFAULT 'C:\\temp\\x'::text,
    CONSTRAINT body_check CHECK ((body <> ';'::text))
);

ALTER TABLE public.notes OWNER TO relay_admin;

COMMENT ON TABLE public.notes IS 'notes; with \\n and $$ inside';

COPY public.notes (id, body) FROM stdin;
1\t\\N
2\t\\\\! not a command, just data
3\tline one\\nline two
\\.

/* a block comment with \\! inside /* nested */ still a comment */
-- a line comment with \\connect in it

ALTER TABLE ONLY public.notes
    ADD CONSTRAINT notes_pkey PRIMARY KEY (id);

--
-- PostgreSQL database dump complete
--

\\unrestrict Xy12ab34

"""


def run(data: bytes, chunk: int = 1 << 20, tolerated: Iterable[str] = ()) -> tuple[
        PlainScriptGuard, bytes]:
    guard = PlainScriptGuard(tolerated)
    out = []
    for i in range(0, len(data), chunk):
        out.extend(guard.feed(data[i:i + chunk]))
    out.extend(guard.finish())
    return guard, b"".join(out)


# ---- the guard lets a real dump through, unchanged but for the restrict lines -------------


def test_a_pg_dump_script_passes_whole() -> None:
    guard, out = run(PLAIN)
    assert guard.header_seen and guard.trailer_seen
    assert guard.dumped_from == "15.18" and guard.dumped_by == "15.18"
    assert guard.copy_blocks == 1 and guard.restrict_key == b"Xy12ab34"
    # The script's own \restrict pair is gone, line for line: psql's line numbers still match.
    assert out.count(b"\n") == PLAIN.count(b"\n")
    assert b"\\restrict" not in out and b"\\unrestrict" not in out
    assert out.replace(b"\n", b"") == PLAIN.replace(b"\\restrict Xy12ab34", b"").replace(
        b"\\unrestrict Xy12ab34", b"").replace(b"\n", b"")


# The prologue pg_dump --create writes (15.18, with the restriction lifted around its
# reconnect), and a database whose name needs the connection-string form.
CREATE_PROLOGUE = b"""--
-- PostgreSQL database dump
--

\\restrict Xy12ab34

SET client_encoding = 'UTF8';

--
-- Name: relay; Type: DATABASE; Schema: -; Owner: relay_admin
--

CREATE DATABASE relay WITH TEMPLATE = template0 ENCODING = 'UTF8';


ALTER DATABASE relay OWNER TO relay_admin;

\\unrestrict Xy12ab34
\\connect relay
\\restrict Xy12ab34

SET client_encoding = 'UTF8';
CREATE TABLE public.notes (id integer);
COMMENT ON DATABASE relay IS 'the relay database';
ALTER DATABASE relay SET search_path TO public;

\\unrestrict Xy12ab34
--
-- PostgreSQL database dump complete
--
"""


def test_pg_dump_create_prologue_is_left_out_line_for_line() -> None:
    guard, out = run(CREATE_PROLOGUE)
    assert guard.created_database == "relay" and guard.reconnected and guard.trailer_seen
    assert out.count(b"\n") == CREATE_PROLOGUE.count(b"\n")
    text = out.decode()
    for gone in ("CREATE DATABASE", "ALTER DATABASE", "COMMENT ON DATABASE", "\\connect"):
        assert gone not in text
    assert "CREATE TABLE public.notes (id integer);" in text


def test_a_database_name_in_connection_string_form_reconnects() -> None:
    script = (b'CREATE DATABASE "Relay Prod" WITH TEMPLATE = template0;\n'
              b'\\connect -reuse-previous=on "dbname=\'Relay Prod\'"\nCREATE TABLE t (a int);\n')
    guard, out = run(script)
    assert guard.created_database == "Relay Prod" and guard.reconnected
    assert out == b"\n\nCREATE TABLE t (a int);\n"


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 4096])
def test_any_chunking_gives_the_same_result(chunk: int) -> None:
    whole = run(PLAIN)[1]
    guard, out = run(PLAIN, chunk)
    assert out == whole
    assert guard.trailer_seen and guard.copy_blocks == 1


def test_tolerated_statements_run_inside_do_blocks() -> None:
    guard, out = run(PLAIN, 5, tolerated=[r"\bOWNER TO\b"])
    assert guard.tolerated_statements == 2
    assert out.count(b"\n") == PLAIN.count(b"\n")
    text = out.decode()
    assert "EXECUTE $stmt_" in text and "EXCEPTION WHEN OTHERS THEN RAISE WARNING" in text
    # COPY and the rest are untouched.
    assert "COPY public.notes (id, body) FROM stdin;\n1\t\\N\n" in text
    assert "ADD CONSTRAINT notes_pkey PRIMARY KEY (id);" in text


def test_a_truncated_script_has_no_trailer() -> None:
    guard, _ = run(PLAIN[:len(PLAIN) // 2])
    assert guard.header_seen and not guard.trailer_seen


def test_sql_after_the_trailer_clears_it() -> None:
    guard, _ = run(PLAIN + b"DROP TABLE public.notes;\n")
    assert not guard.trailer_seen


def test_the_scan_streams_in_bounded_memory() -> None:
    """A 40 MB COPY block passes through without being held."""
    row = b"12345\t" + b"x" * 200 + b"\n"
    head = b"-- PostgreSQL database dump\nCOPY public.big (id, t) FROM stdin;\n"
    guard = PlainScriptGuard()
    tracemalloc.start()
    try:
        for _ in guard.feed(head):
            pass
        block = row * 5000  # ~1 MB
        for _ in range(40):
            for _ in guard.feed(block):
                pass
        for _ in guard.feed(b"\\.\n-- PostgreSQL database dump complete\n"):
            pass
        for _ in guard.finish():
            pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert guard.trailer_seen and guard.copy_blocks == 1
    assert peak < 8 << 20, f"peak {peak} bytes while scanning 40 MB"


# ---- hostile scripts are refused, naming the line -------------------------------------------


@pytest.mark.parametrize(("script", "line", "says"), [
    (b"SELECT 1;\n\\! touch /tmp/x\n", 2, "`\\!`"),
    (b"SELECT 1; \\! touch /tmp/x\n", 1, "`\\!`"),
    (b"\\connect relay\nCREATE TABLE pwned ();\n", 1, "`\\connect`"),
    (b"SELECT 1;\n  \\c relay\n", 2, "`\\c`"),
    (b"SELECT 'x' \\g /tmp/out\n", 1, "`\\g`"),
    (b"SELECT 1 \\\\ \\! id\n", 1, "meta-command"),
    (b"\\set x 1\n", 1, "`\\set`"),
    (b"\\copy t from program 'id'\n", 1, "`\\copy`"),
    (b"\\restrict abc\n\\unrestrict abd\n", 2, "matching"),
    (b"\\restrict abc\n\\restrict abc\n", 2, "second"),
    # pg_dump --create's reconnect: once, to the database just created, and nothing else.
    (b"\\restrict abc\n\\unrestrict abc\n\\restrict abc\n", 3, "second"),
    (b"CREATE DATABASE relay;\n\\connect other\n", 2, "`\\connect` to 'other'"),
    (b"CREATE DATABASE relay;\n\\connect relay\n\\connect relay\n", 3, "`\\connect`"),
    (b"CREATE DATABASE relay;\n\\connect relay extra\n", 2, "`\\connect`"),
    (b"SELECT 1;\nCREATE DATABASE \"A\";\n\\connect a\n", 3, "`\\connect` to 'a'"),
    (b"\\restrict `id`\n", 1, "meta-command"),
    (b"\\unrestrict abc\n", 1, "matching"),
    (b"SELECT 1\n\\restrict abc\n", 2, "meta-command"),
    # The COPY data only starts after the statement's line, and ends at "\.".
    (b"COPY t FROM stdin; \\! id\n", 1, "after a COPY"),
    (b"COPY t FROM stdin;\n1\n\\.\n\\! id\n", 4, "`\\!`"),
    # COPY ... TO STDOUT reads no data: what follows is a command again.
    (b"COPY (SELECT 1 FROM stdin) TO STDOUT;\n\\! id\n", 2, "`\\!`"),
    (b"COPY (SELECT 1 AS stdin) TO STDOUT;\n\\! id\n", 2, "`\\!`"),
    # Where a literal ends must not depend on standard_conforming_strings ...
    (b"SELECT 'a\\' , ' \\! id ';\n", 1, "standard_conforming_strings"),
    (b"SELECT 'a\\'';\n", 1, "standard_conforming_strings"),
    # ... nor on a client encoding whose multibyte characters end in 0x5C.
    (b"SELECT E'\x82\\' ;\n", 1, "non-ASCII byte"),
    (b"SELECT '\x82\\\\' ;\n", 1, "standard_conforming_strings"),
    (b"SET client_encoding = 'SJIS';\n", 1, "SJIS"),
    (b"SET client_encoding TO big5;\n", 1, "big5"),
    # psql's lexer may read "1$a$" as a number and a dollar quote.
    (b"SELECT 1$a$ ; $a$ \\! id $a$;\n", 1, "dollar quote"),
])
def test_hostile_scripts_are_refused(script: bytes, line: int, says: str) -> None:
    for chunk in (1, 1 << 20):
        with pytest.raises(HostileDump) as exc:
            run(script, chunk)
        assert exc.value.line == line, str(exc.value)
        assert f"line {line}:" in str(exc.value)
        assert says in str(exc.value)


def test_nothing_of_the_offending_line_reaches_psql() -> None:
    guard = PlainScriptGuard()
    out = []
    with pytest.raises(HostileDump):
        for piece in (b"SELECT 1;\n", b"SELECT 2;\n\\! touch /tmp/x\nSELECT 3;\n"):
            out.extend(guard.feed(piece))
    assert b"touch" not in b"".join(out)


@pytest.mark.parametrize("script", [
    b"SELECT $$ \\! inside a dollar quote $$;\n",
    b"SELECT $tag$ it's \\! $$ still inside $tag$;\n",
    b"SELECT 'a\\b';\n",
    b"SELECT E'it\\'s \\\\ ok';\n",
    b"SELECT \"odd \\ name\" FROM t;\n",
    b"/* \\! */ SELECT 1;\n",
    b"-- \\! comment\nSELECT 1;\n",
    b"SELECT a$b$ FROM t;\n",
    b"SELECT $1;\n",
    b"SELECT 'line one\nline \\two';\n",
    b"COPY t (a) FROM stdin;\n\\!\n\\\\.\n\\.\n",
    b"COPY t FROM stdin WITH (FORMAT csv);\n\"a\\b\"\n\\.\r\n",
])
def test_legitimate_backslashes_pass(script: bytes) -> None:
    run(script)
    run(script, 1)


# ---- gzip ---------------------------------------------------------------------------------


def test_gzip_stream_multi_member_and_truncation() -> None:
    data = gzip.compress(b"first member\n") + gzip.compress(b"second\n")
    gz = GzipStream()
    assert b"".join(gz.feed(data)) + gz.finish() == b"first member\nsecond\n"
    cut = gzip.compress(PLAIN)[:-10]
    gz = GzipStream()
    list(gz.feed(cut))
    with pytest.raises(DumpProblem) as exc:
        gz.finish()
    assert exc.value.offset == len(cut) and "truncated" in str(exc.value)


def test_corrupt_gzip_names_the_offset() -> None:
    data = bytearray(gzip.compress(PLAIN * 20))
    data[40:60] = b"\xff" * 20
    gz = GzipStream()
    with pytest.raises(DumpProblem) as exc:
        list(gz.feed(bytes(data)))
        gz.finish()
    assert "byte" in str(exc.value)


# ---- the archive header -------------------------------------------------------------------


def _int(value: int) -> bytes:
    return bytes([1 if value < 0 else 0]) + struct.pack("<i", abs(value))


def _str(text: str) -> bytes:
    raw = text.encode()
    return _int(len(raw)) + raw


def header(version: tuple[int, int, int] = (1, 14, 0), fmt: int = 1) -> bytes:
    out = b"PGDMP" + bytes(version) + bytes([4, 8, fmt])
    out += bytes([1]) if version >= (1, 15, 0) else _int(-1)
    for v in (3, 20, 9, 6, 11, 125, 0):  # 2025-12-06 09:20:03
        out += _int(v)
    return out + _str("relay") + _str("16.4") + _str("16.4") + b"\x00" * 64


def test_archive_header_is_read() -> None:
    h = parse_archive_header(header())
    assert h is not None
    assert h.version_text == "1.14.0" and h.format == "custom"
    assert h.compression == "gzip (default level)"
    assert h.created == dt.datetime(2025, 12, 6, 9, 20, 3, tzinfo=dt.UTC)
    assert (h.dbname, h.server_version, h.pg_dump_version) == ("relay", "16.4", "16.4")
    h16 = parse_archive_header(header((1, 15, 0), fmt=5))
    assert h16 is not None and h16.format == "directory" and h16.compression == "gzip"


def test_archive_header_problems() -> None:
    assert parse_archive_header(b"PGDMP\x01\x0e") is None  # cut short
    assert parse_archive_header(b"<html>") is None
    with pytest.raises(DumpProblem):
        parse_archive_header(b"PGDMP\x07\x00\x00\x04\x08\x01" + b"\x00" * 64)


@pytest.mark.parametrize(("head", "kind"), [
    (header(), "custom"),
    (header(fmt=5), "directory"),
    (b"toc.dat".ljust(257, b"\x00") + b"ustar\x0000" + b"\x00" * 300, "tar"),
    (b"--\n-- PostgreSQL database dump\n", "plain"),
    (b"\\restrict abc\n", "plain"),
    (b"<html>", "unknown"),
    (b"", "unknown"),
])
def test_sniff(head: bytes, kind: str) -> None:
    assert sniff(head) == kind


@pytest.mark.parametrize(("version", "restricted"), [
    ((15, 13), False), ((15, 14), True), ((15, 18), True), ((16, 9), False), ((16, 10), True),
    ((17, 6), True), ((13, 21), False), ((12, 22), False), ((18, 0), True), (None, False),
])
def test_psql_restricted_mode_versions(version: tuple[int, int] | None,
                                       restricted: bool) -> None:
    assert psql_has_restricted_mode(version) is restricted


# ---- backup key patterns ------------------------------------------------------------------


def test_key_pattern_matches_only_backups() -> None:
    p = KeyPattern.compile("%Y-%m-%d/relay.*", "backups/")
    assert p.list_prefix == "backups/"
    assert p.date_of("backups/2025-03-01/relay.dump") == dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
    for other in ("backups/2025-03-01/analytics.dump", "backups/2025-03-01/backup.log",
                  "backups/manifest.json", "logs/2025-03-01/relay.dump",
                  "backups/2025-13-01/relay.dump", "backups/2025-03-01/x/relay.dump"):
        assert not p.matches(other), other
    stamp = KeyPattern.compile("db/relay-%Y%m%dT%H%M%SZ.sql.gz")
    assert stamp.list_prefix == "db/relay-"
    assert stamp.date_of("db/relay-20250301T023000Z.sql.gz") == \
        dt.datetime(2025, 3, 1, 2, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize("bad", ["*/%Y-%m-%d.dump", "%d-%m-%Y.dump", "%Y-%m.dump",
                                 "%Y%m%d%q", "%Y%Y%m%d", "relay.dump"])
def test_key_pattern_refuses_what_cannot_be_listed_by_date(bad: str) -> None:
    with pytest.raises(KeyPatternError):
        KeyPattern.compile(bad)


def test_start_after_splits_the_history_at_the_day() -> None:
    """Keys of the day and later sort after StartAfter, earlier ones before it."""
    rng = random.Random(7)
    for pattern in ("%Y-%m-%d/relay.*", "relay-%Y%m%d-%H%M.dump", "%Y/%m/%d/relay.dump"):
        p = KeyPattern.compile(pattern, "backups/")
        for _ in range(200):
            day = dt.date(2024, 1, 1) + dt.timedelta(days=rng.randrange(700))
            other = dt.date(2024, 1, 1) + dt.timedelta(days=rng.randrange(700))
            key = "backups/" + other.strftime(
                pattern.replace("*", "dump").replace("%H", "02").replace("%M", "30"))
            assert p.matches(key), key
            assert (key > p.start_after(day)) == (other >= day), (pattern, day, key)
