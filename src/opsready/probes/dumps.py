"""What is inside a PostgreSQL dump, read as a stream of bytes.

pg_dump writes four formats (https://www.postgresql.org/docs/current/app-pgdump.html):

- **custom** (``-Fc``): an archive that starts with ``PGDMP``, a header (archive version,
  integer and offset sizes, compression, creation time, database name, the server's and
  pg_dump's versions), the table of contents, then the data blocks;
- **directory** (``-Fd``): ``toc.dat`` (the same header and TOC) and one file per table's data;
- **tar** (``-Ft``): a tar archive whose first member is ``toc.dat``;
- **plain** (``-Fp``): a SQL script for ``psql``, opening with ``-- PostgreSQL database dump``
  and closing with ``-- PostgreSQL database dump complete``. Often gzip'd.

A backup is untrusted input. A plain script may carry psql meta-commands (``\\!`` runs a shell
command, ``\\connect`` switches to another database): the class of CVE-2025-8714.
``PlainScriptGuard`` lexes the script the way psql does (quotes, dollar quotes, comments,
COPY data) and refuses any backslash command outside COPY data, except the
``\\restrict``/``\\unrestrict`` pair current pg_dump writes around the script, and the one
``\\connect`` a ``pg_dump --create`` script makes to the database its ``CREATE DATABASE`` has
just made. That prologue (the ``CREATE DATABASE``, the reconnect, and the statements about
that database: owner, settings, comment, privileges) is left out, so the script restores into
the database psql is connected to. It streams: memory holds one line and at most
``STATEMENT_WINDOW`` bytes of the current statement.

Nothing here talks to the network. The functions take bytes; callers stream them.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "STATEMENT_WINDOW",
    "ArchiveHeader",
    "DumpFormat",
    "DumpProblem",
    "GzipStream",
    "HostileDump",
    "PlainScriptGuard",
    "major_version",
    "parse_archive_header",
    "sniff",
]

DumpFormat = Literal["custom", "directory", "tar", "plain", "unknown"]

# The most of one statement held in memory: a statement that fits is eligible for
# restore_drill.tolerated_errors; a longer one streams through as it is.
STATEMENT_WINDOW = 64 * 1024
# Outside COPY data a line longer than this is refused rather than buffered.
MAX_SQL_LINE = 64 * 1024 * 1024

# pg_backup_archiver.h: ArchiveFormat
_ARCHIVE_FORMATS = {1: "custom", 3: "tar", 4: "null", 5: "directory"}


class DumpProblem(Exception):
    """The dump is broken (truncated, corrupt, not a dump). ``offset`` is the byte of the
    object where it was noticed, when known."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


class HostileDump(DumpProblem):
    """A plain script would make psql do more than run SQL: the line and what is on it."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


# ---- formats and the archive header -----------------------------------------------------------


def sniff(head: bytes) -> DumpFormat:
    """The dump format from the first bytes of an (already decompressed) stream."""
    if head.startswith(b"PGDMP"):
        header = parse_archive_header(head)
        if header is not None and header.format == "directory":
            return "directory"  # a directory dump's toc.dat
        return "custom"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith((b"--", b"SET ", b"CREATE ", b"\\restrict", b"BEGIN")):
        return "plain"
    return "unknown"


def is_gzip(head: bytes) -> bool:
    return head.startswith(b"\x1f\x8b")


# The frame magic numbers of the compressions pg_dump -Z (PostgreSQL 16+) and external tools
# write besides gzip: zstd (RFC 8878 section 3.1.1) and the lz4 frame format.
_FOREIGN_COMPRESSIONS = ((b"\x28\xb5\x2f\xfd", "zstd"), (b"\x04\x22\x4d\x18", "lz4"))


def foreign_compression(head: bytes) -> str | None:
    """``zstd`` or ``lz4`` when a stream starts with that frame's magic number: a compression
    this module does not unwrap (it reads gzip only), so the dump inside cannot be judged."""
    for magic, name in _FOREIGN_COMPRESSIONS:
        if head.startswith(magic):
            return name
    return None


@dataclass(frozen=True)
class ArchiveHeader:
    """The header of a custom-format archive (also ``toc.dat`` of the directory and tar
    formats), as pg_backup_archiver.c ``ReadHead`` reads it."""

    version: tuple[int, int, int]
    format: str
    int_size: int
    offset_size: int
    compression: str
    created: dt.datetime | None
    dbname: str | None
    server_version: str | None
    pg_dump_version: str | None

    @property
    def version_text(self) -> str:
        return ".".join(str(v) for v in self.version)

    def describe(self) -> dict[str, object]:
        return {"archive_version": self.version_text, "format": self.format,
                "compression": self.compression,
                "created": self.created.isoformat() if self.created else None,
                "dbname": self.dbname, "server_version": self.server_version,
                "pg_dump_version": self.pg_dump_version}


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise IndexError
        b = self.data[self.pos]
        self.pos += 1
        return b

    def int_(self, size: int) -> int:
        sign = self.byte()
        raw = self.data[self.pos:self.pos + size]
        if len(raw) < size:
            raise IndexError
        self.pos += size
        value = int.from_bytes(raw, "little")
        return -value if sign else value

    def str_(self, size: int) -> str | None:
        length = self.int_(size)
        if length < 0:
            return None
        if length > 4096:
            raise ValueError("implausible string length in the archive header")
        raw = self.data[self.pos:self.pos + length]
        if len(raw) < length:
            raise IndexError
        self.pos += length
        return raw.decode("utf-8", "replace")


def parse_archive_header(data: bytes) -> ArchiveHeader | None:
    """The archive header, or ``None`` when ``data`` is too short or not an archive.
    Raises ``DumpProblem`` when it starts with ``PGDMP`` but the header is malformed."""
    if not data.startswith(b"PGDMP"):
        return None
    r = _Reader(data)
    r.pos = 5
    try:
        version = (r.byte(), r.byte(), r.byte())
        if version[0] != 1 or version[1] > 40:
            raise DumpProblem(f"archive version {'.'.join(map(str, version))} is not one "
                              f"pg_dump writes", offset=5)
        int_size, off_size = r.byte(), r.byte()
        if not (1 <= int_size <= 8 and 1 <= off_size <= 8):
            raise DumpProblem(f"archive header has integer size {int_size} and offset size "
                              f"{off_size}", offset=8)
        fmt = _ARCHIVE_FORMATS.get(r.byte(), "unknown")
        if version >= (1, 15, 0):
            algorithm = {0: "none", 1: "gzip", 2: "lz4", 3: "zstd"}.get(r.byte(), "unknown")
            compression = algorithm
        else:
            level = r.int_(int_size)
            compression = "none" if level == 0 else \
                "gzip (default level)" if level < 0 else f"gzip (level {level})"
        created = None
        if version >= (1, 4, 0):
            sec, minute, hour, mday, mon, year, _isdst = (r.int_(int_size) for _ in range(7))
            try:
                created = dt.datetime(year + 1900, mon + 1, mday, hour, minute, sec,
                                      tzinfo=dt.UTC)
            except ValueError:
                created = None
        dbname = r.str_(int_size)
        server = pg_dump = None
        if version >= (1, 10, 0):
            server, pg_dump = r.str_(int_size), r.str_(int_size)
    except IndexError:
        return None
    except ValueError as exc:
        raise DumpProblem(str(exc), offset=r.pos) from None
    return ArchiveHeader(version=version, format=fmt, int_size=int_size, offset_size=off_size,
                         compression=compression, created=created, dbname=dbname,
                         server_version=server, pg_dump_version=pg_dump)


def major_version(text: str | None) -> int | None:
    """The major version of ``15.18 (Debian ...)``, ``9.6.24`` or ``pg_restore (PostgreSQL)
    15.18``: 15, 9 (9.x counted as 9), 15."""
    if not text:
        return None
    m = re.search(r"(\d+)(?:\.(\d+))?", text)
    return int(m.group(1)) if m else None


# ---- gzip ---------------------------------------------------------------------------------


class GzipStream:
    """Decompresses gzip (multi-member too) chunk by chunk with bounded output per step,
    and knows where it is: ``finish()`` raises ``DumpProblem`` when the stream ended before
    a member's end marker, and corrupt input raises with the byte offset."""

    def __init__(self) -> None:
        self._d = zlib.decompressobj(wbits=31)
        self.consumed = 0  # compressed bytes fed so far
        self._member_done = False

    def feed(self, chunk: bytes, step: int = 4 << 20) -> Iterator[bytes]:
        data = chunk
        start = self.consumed
        self.consumed += len(chunk)
        while data:
            if self._member_done:
                # Padding after the last member is legal: zeros.
                if not data.strip(b"\x00"):
                    return
                self._d = zlib.decompressobj(wbits=31)
                self._member_done = False
            try:
                out = self._d.decompress(data, step)
            except zlib.error as exc:
                raise DumpProblem(f"the gzip stream is corrupt ({exc}) near byte "
                                  f"{start + len(chunk) - len(data)}",
                                  offset=start + len(chunk) - len(data)) from None
            if out:
                yield out
            if self._d.eof:
                data = self._d.unused_data
                self._member_done = True
            else:
                data = self._d.unconsumed_tail

    def finish(self) -> bytes:
        if self._member_done:
            return b""
        tail = self._d.flush()
        if not self._d.eof:
            raise DumpProblem(
                f"the gzip stream ends at byte {self.consumed} before its end marker: "
                f"the backup is truncated", offset=self.consumed)
        return tail


# ---- the plain-script guard -----------------------------------------------------------------

# Client encodings in which a multibyte character may end in 0x5C, the backslash: psql and a
# byte-wise scan would then disagree on what is a backslash command.
_UNSAFE_ENCODINGS = frozenset({
    "SJIS", "SHIFT_JIS", "SHIFTJIS", "MSKANJI", "WIN932", "SHIFT_JIS_2004", "BIG5", "WIN950",
    "GBK", "WIN936", "CP936", "GB18030", "UHC", "WIN949", "JOHAB",
})
_IDENT = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_$") | \
    frozenset(range(0x80, 0x100))
_DIGITS = frozenset(b"0123456789")
_NORMAL_SPECIAL = re.compile(rb"""['"$\\;()]|--|/\*""")
_EQUOTE_SPECIAL = re.compile(rb"['\\]")
_BLOCK_SPECIAL = re.compile(rb"/\*|\*/")
_DOLQ = re.compile(rb"\$([A-Za-z\x80-\xff_][A-Za-z\x80-\xff_0-9]*)?\$")
_RESTRICT = re.compile(rb"^[ \t]*\\(restrict|unrestrict)[ \t]+([A-Za-z0-9]+)[ \t]*\r?$")
# pg_dump --create's reconnect (appendPsqlMetaConnect): ``\connect`` and the database as an
# identifier, or, for a name of other characters, ``-reuse-previous=on`` and a quoted
# connection string ``dbname=...``.
_CONNECT = re.compile(
    rb'^[ \t]*\\connect[ \t]+(?:-reuse-previous=on[ \t]+)?'
    rb'([A-Za-z_][A-Za-z0-9_$]*|"(?:[^"]|"")+")[ \t]*\r?$')
# The identifier a statement names after DATABASE, as pg_dump writes it (fmtId).
_IDENTIFIER = rb'([A-Za-z_][A-Za-z0-9_$]*|"(?:[^"]|"")+")'
_CREATE_DATABASE = re.compile(rb"^CREATE\s+DATABASE\s+" + _IDENTIFIER + rb"(?:\s|;|$)", re.I)
# What pg_dump --create writes about the database itself, besides creating it: owner,
# settings, comment, security label, privileges, and role settings in it.
_ABOUT_DATABASE = re.compile(
    rb"^(?:ALTER\s+DATABASE|COMMENT\s+ON\s+DATABASE|SECURITY\s+LABEL\s+(?:FOR\s+\S+\s+)?ON"
    rb"\s+DATABASE|(?:GRANT|REVOKE)\s.*?\sON\s+DATABASE|ALTER\s+ROLE\s.*?\sIN\s+DATABASE)\s+"
    + _IDENTIFIER + rb"(?:\s|;|$)", re.I | re.S)
_WORD = re.compile(rb"[A-Za-z_\x80-\xff][A-Za-z0-9_$\x80-\xff]*")
_SET_ENCODING = re.compile(
    rb"^\s*SET\s+(?:SESSION\s+)?client_encoding\s*(?:=|TO)\s*'?([A-Za-z0-9_]+)'?", re.I)
_TRANSACTION_WORDS = frozenset({b"BEGIN", b"COMMIT", b"ROLLBACK", b"START", b"SAVEPOINT",
                                b"RELEASE", b"END", b"PREPARE", b"ABORT", b"COPY"})
HEADER_LINE = b"-- PostgreSQL database dump"
TRAILER_LINE = b"-- PostgreSQL database dump complete"

_State = Literal["normal", "quote", "equote", "dquote", "dollar", "block"]


@dataclass
class _Statement:
    text: bytearray = field(default_factory=bytearray)
    overflow: bool = False  # longer than the window: already streamed out
    has_code: bool = False  # anything but whitespace and comments
    first_word: bytes = b""
    last_word: bytes = b""
    copy_in: bool = False  # COPY ... FROM STDIN at paren depth 0


class PlainScriptGuard:
    """Lex a plain SQL script as psql would, refuse what psql would run besides SQL, and
    hand back the script to pipe into psql.

    ``feed(data)`` yields the bytes for psql; ``finish()`` yields the rest. A refused script
    raises ``HostileDump`` naming its line; nothing of the offending line is yielded.

    The output equals the input except that:

    - the script's own ``\\restrict``/``\\unrestrict`` lines become empty lines (line numbers
      stay the same), so the caller can put psql into restricted mode with a key the script
      does not know;
    - a statement matching one of ``tolerated`` (regular expressions, searched in the
      statement with its whitespace collapsed) runs inside ``DO ... EXCEPTION``, so its error
      becomes a ``WARNING: opsready tolerated: ...`` and psql's ``ON_ERROR_STOP`` stops only on
      the errors that are not tolerated.

    It also records what it saw: the header and trailer comments, the versions named in the
    header, and the byte count.
    """

    def __init__(self, tolerated: Iterable[str] = ()) -> None:
        self.tolerated = [re.compile(p.encode(), re.I) for p in tolerated]
        self.line = 1
        self.bytes_in = 0
        self.header_seen = False
        self.trailer_seen = False
        self.dumped_from: str | None = None
        self.dumped_by: str | None = None
        self.restrict_key: bytes | None = None
        self.unrestricted = False
        # pg_dump --create: the database the script creates, and whether it has switched to it.
        self.created_database: str | None = None
        self.reconnected = False
        self._restricted_again = False
        self.tolerated_statements = 0
        self.copy_blocks = 0
        self._state: _State = "normal"
        self._dollar_tag = b""
        self._block_depth = 0
        self._paren = 0
        self._escape_pending = False  # a backslash ended the last line inside E'...'
        self._stmt = _Statement()
        self._in_copy = False
        self._copy_line_start = True
        self._pending = b""
        self._tag = secrets.token_hex(6)

    # ---- the stream ---------------------------------------------------------------------

    def feed(self, data: bytes) -> Iterator[bytes]:
        self.bytes_in += len(data)
        buf = self._pending + data if self._pending else data
        self._pending = b""
        pos = 0
        while pos < len(buf):
            if self._in_copy:
                pos, out = self._copy_data(buf, pos, final=False)
                if out:
                    yield out
                if pos < 0:  # needs more bytes to decide
                    return
                continue
            nl = buf.find(b"\n", pos)
            if nl < 0:
                if len(buf) - pos > MAX_SQL_LINE:
                    raise HostileDump(f"line {self.line} is longer than {MAX_SQL_LINE} bytes "
                                      f"outside COPY data", self.line)
                self._pending = buf[pos:]
                return
            yield from self._sql_line(buf[pos:nl + 1])
            pos = nl + 1

    def finish(self) -> Iterator[bytes]:
        if self._in_copy:
            _, out = self._copy_data(self._pending, 0, final=True)
            self._pending = b""
            if out:
                yield out
        elif self._pending:
            line, self._pending = self._pending, b""
            yield from self._sql_line(line)
        if self._stmt.text:
            yield bytes(self._stmt.text)
            self._stmt = _Statement()

    # ---- COPY data ------------------------------------------------------------------------

    def _copy_data(self, buf: bytes, pos: int, *, final: bool) -> tuple[int, bytes]:
        """Pass COPY data through up to its ``\\.`` line. Returns the position after what
        was consumed (-1: the rest is kept pending) and the bytes to yield."""
        start = pos
        while pos < len(buf):
            if self._copy_line_start:
                head = buf[pos:pos + 4]
                if head.startswith(b"\\.\n") or head == b"\\.\r\n":
                    end = pos + (3 if head.startswith(b"\\.\n") else 4)
                    self._in_copy = False
                    self._copy_line_start = True
                    self.line += 1
                    return end, buf[start:end]
                if not final and (b"\\.\n".startswith(head) or b"\\.\r\n".startswith(head)):
                    self._pending = buf[pos:]
                    return -1, buf[start:pos]
                if final and head in (b"\\.", b"\\.\r"):
                    self._in_copy = False
                    return len(buf), buf[start:]
            nl = buf.find(b"\n", pos)
            if nl < 0:
                self._copy_line_start = False
                return len(buf), buf[start:]
            self.line += 1
            self._copy_line_start = True
            pos = nl + 1
        return pos, buf[start:pos]

    # ---- SQL ------------------------------------------------------------------------------

    def _refuse(self, what: str) -> HostileDump:
        return HostileDump(f"line {self.line}: {what}", self.line)

    def _sql_line(self, line: bytes) -> Iterator[bytes]:
        if self._state == "normal" and not self._stmt.has_code:
            bare = line.rstrip(b"\n")
            m = _RESTRICT.match(bare)
            if m is not None:
                self._restrict(m.group(1), m.group(2))
            else:
                m = _CONNECT.match(bare)
                if m is not None:
                    self._reconnect(m.group(1))
            if m is not None:
                self._note_line(line)
                self.line += 1
                self._stmt.text += b"\n"
                return
        self._note_line(line)
        seg_start = 0
        p = 0
        n = len(line)
        while p < n:
            state = self._state
            if state == "normal":
                m = _NORMAL_SPECIAL.search(line, p)
                if m is None:
                    self._words(line[p:n])
                    p = n
                    break
                self._words(line[p:m.start()])
                tok = m.group()
                p = m.end()
                if tok == b"--":
                    p = n  # the rest of the line is a comment
                elif tok == b"/*":
                    self._state, self._block_depth = "block", 1
                elif tok == b"'":
                    self._stmt.has_code = True
                    prev = line[m.start() - 1] if m.start() > 0 else None
                    prev2 = line[m.start() - 2] if m.start() > 1 else None
                    escape = prev in (ord("E"), ord("e")) and (prev2 is None or prev2 not in _IDENT)
                    self._state = "equote" if escape else "quote"
                elif tok == b'"':
                    self._stmt.has_code = True
                    self._state = "dquote"
                elif tok == b"$":
                    self._stmt.has_code = True
                    p = self._dollar(line, m.start(), p)
                elif tok == b"\\":
                    raise self._refuse(
                        f"the psql meta-command `{_command(line, m.start())}` outside COPY "
                        f"data; a backup must hold only SQL (psql would run it on the machine "
                        f"running the drill)")
                elif tok == b"(":
                    self._stmt.has_code = True
                    self._paren += 1
                elif tok == b")":
                    self._stmt.has_code = True
                    self._paren = max(0, self._paren - 1)
                elif tok == b";" and self._paren == 0:
                    self._stmt.text += line[seg_start:p]
                    seg_start = p
                    yield from self._end_statement(line, p)
                    if self._in_copy:
                        # The rest of the line is blank (checked); the data follows it.
                        self.line += 1
                        yield line[p:]
                        return
            elif state == "quote":
                q = line.find(b"'", p)
                if q < 0:
                    p = n
                    break
                self._check_quote_end(line, q, plain=True)
                if line[q + 1:q + 2] == b"'":
                    p = q + 2
                    continue
                self._state, p = "normal", q + 1
            elif state == "equote":
                if self._escape_pending:
                    self._escape_pending = False
                    p += 1
                    continue
                m2 = _EQUOTE_SPECIAL.search(line, p)
                if m2 is None:
                    p = n
                    break
                i = m2.start()
                if line[i] == 0x5C:
                    if i > 0 and line[i - 1] >= 0x80:
                        raise self._refuse(_AMBIGUOUS_ENCODING)
                    if i + 1 >= n:
                        self._escape_pending = True
                        p = n
                        break
                    p = i + 2
                    continue
                if line[i + 1:i + 2] == b"'":
                    p = i + 2
                    continue
                self._state, p = "normal", i + 1
            elif state == "dquote":
                q = line.find(b'"', p)
                if q < 0:
                    p = n
                    break
                if line[q + 1:q + 2] == b'"':
                    p = q + 2
                    continue
                self._state, p = "normal", q + 1
            elif state == "dollar":
                end = line.find(self._dollar_tag, p)
                if end < 0:
                    p = n
                    break
                self._state, p = "normal", end + len(self._dollar_tag)
            else:  # block comment; psql nests them
                m3 = _BLOCK_SPECIAL.search(line, p)
                if m3 is None:
                    p = n
                    break
                self._block_depth += 1 if m3.group() == b"/*" else -1
                p = m3.end()
                if self._block_depth == 0:
                    self._state = "normal"
        self.line += 1
        self._stmt.text += line[seg_start:]
        if len(self._stmt.text) > STATEMENT_WINDOW:
            self._stmt.overflow = True
            out, self._stmt.text = bytes(self._stmt.text), bytearray()
            yield out

    def _check_quote_end(self, line: bytes, q: int, *, plain: bool) -> None:
        """A plain literal ends at ``q``. Under ``standard_conforming_strings = off`` (which
        a script can switch at run time) an odd run of backslashes before the quote escapes
        it, and in some client encodings a multibyte character swallows a backslash: refuse
        a literal whose end depends on either."""
        run = 0
        while q - run - 1 >= 0 and line[q - run - 1] == 0x5C:
            run += 1
        if run and (run % 2 == 1 or (q - run - 1 >= 0 and line[q - run - 1] >= 0x80)):
            raise self._refuse(
                "a string literal ends in a backslash, so where it ends depends on "
                "standard_conforming_strings and the client encoding; a dump written by "
                "pg_dump does not need this")

    def _dollar(self, line: bytes, at: int, after: int) -> int:
        m = _DOLQ.match(line, at)
        if m is None:
            return after  # a parameter such as $1, or a lone $
        if at > 0 and line[at - 1] in _IDENT:
            # Inside an identifier ``a$b$`` the $ is part of the name; after a number
            # psql's lexer may start a dollar quote: refuse the ambiguity.
            j = at
            while j > 0 and line[j - 1] in _IDENT:
                j -= 1
            if line[j] in _DIGITS:
                raise self._refuse("a dollar quote right after a number")
            return after
        self._state, self._dollar_tag = "dollar", m.group()
        return m.end()

    def _words(self, text: bytes) -> None:
        """Track the statement's first word and ``FROM STDIN`` at paren depth 0."""
        if not text.strip():
            return
        self._stmt.has_code = True
        for w in _WORD.findall(text):
            upper = w.upper()
            if not self._stmt.first_word:
                self._stmt.first_word = upper
            if self._paren == 0 and upper == b"STDIN" and self._stmt.last_word == b"FROM":
                self._stmt.copy_in = self._stmt.first_word == b"COPY"
            self._stmt.last_word = upper if self._paren == 0 else self._stmt.last_word

    def _end_statement(self, line: bytes, end: int) -> Iterator[bytes]:
        stmt, self._stmt = self._stmt, _Statement()
        self._check_statement(stmt)
        if self._about_created_database(stmt):
            # Left out, line for line: the script restores into the database psql is in.
            yield b"\n" * stmt.text.count(b"\n")
            return
        if stmt.copy_in:
            # psql would lex the rest of this line only after the COPY data: nothing may
            # stand there.
            if line[end:].strip():
                raise self._refuse("text after a COPY ... FROM stdin statement on its line")
            self._in_copy = True
            self._copy_line_start = True
            self.copy_blocks += 1
        if not stmt.overflow and stmt.has_code and self._is_tolerated(stmt):
            self.tolerated_statements += 1
            yield self._wrap(bytes(stmt.text))
        else:
            yield bytes(stmt.text)

    def _check_statement(self, stmt: _Statement) -> None:
        if stmt.first_word == b"SET" and not stmt.overflow:
            m = _SET_ENCODING.match(_strip_comments(bytes(stmt.text)))
            if m is not None and m.group(1).upper().decode() in _UNSAFE_ENCODINGS:
                raise self._refuse(
                    f"client_encoding {m.group(1).decode()!r}: in it a multibyte character may "
                    f"end in a backslash byte, which hides psql meta-commands from a scan")

    def _is_tolerated(self, stmt: _Statement) -> bool:
        if not self.tolerated or stmt.first_word in _TRANSACTION_WORDS or stmt.copy_in:
            return False
        text = b" ".join(_strip_comments(bytes(stmt.text)).split())
        return any(p.search(text) for p in self.tolerated)

    def _wrap(self, text: bytes) -> bytes:
        body = text.rstrip()
        if body.endswith(b";"):
            body = body[:-1]
        outer, inner = f"$opsready_{self._tag}$".encode(), f"$stmt_{self._tag}$".encode()
        if outer in body or inner in body:
            return text
        # The statement's own newlines stay where they were, so psql's line numbers match
        # the backup's.
        return (b"DO " + outer + b" BEGIN EXECUTE " + inner + body + inner +
                b"; EXCEPTION WHEN OTHERS THEN RAISE WARNING 'opsready tolerated: %', SQLERRM;"
                b" END " + outer + b";")

    def _about_created_database(self, stmt: _Statement) -> bool:
        """A statement of pg_dump --create's about the database itself: the first CREATE
        DATABASE (before any reconnect), and then what names that database (its owner,
        settings, comment, privileges). Only whole statements within the window qualify."""
        if stmt.overflow or stmt.first_word not in (b"CREATE", b"ALTER", b"COMMENT", b"SECURITY",
                                                    b"GRANT", b"REVOKE"):
            return False
        text = _strip_comments(bytes(stmt.text)).strip()
        if self.created_database is None:
            m = _CREATE_DATABASE.match(text)
            if m is None or self.reconnected:
                return False
            self.created_database = _identifier(m.group(1))
            return True
        m = _ABOUT_DATABASE.match(text)
        return m is not None and _identifier(m.group(1)) == self.created_database

    def _reconnect(self, target: bytes) -> None:
        """``\\connect`` as pg_dump --create writes it: once, to the database the script
        has just created. psql stays where it is (the line becomes empty)."""
        name = _identifier(target)
        if name.startswith("dbname="):
            name = _connstr_value(name[len("dbname="):])
        if self.created_database is None or self.reconnected or name != self.created_database:
            raise self._refuse(
                f"the psql meta-command `\\connect` to {name!r} (only pg_dump --create's one "
                f"reconnect to the database its CREATE DATABASE made is left out); a backup "
                f"must hold only SQL (psql would switch to another database)")
        self.reconnected = True

    def _restrict(self, word: bytes, key: bytes) -> None:
        if word == b"restrict":
            if self.restrict_key is not None:
                # pg_dump --create lifts the restriction for its reconnect and sets it again,
                # with the same key, once.
                if not (key == self.restrict_key and self.unrestricted and self.reconnected
                        and not self._restricted_again):
                    raise self._refuse("a second \\restrict")
                self._restricted_again = True
                self.unrestricted = False
                return
            self.restrict_key = key
            return
        if self.restrict_key is None or key != self.restrict_key or self.unrestricted:
            raise self._refuse("\\unrestrict without the matching \\restrict key")
        self.unrestricted = True

    def _note_line(self, line: bytes) -> None:
        """The header and trailer comments, and what follows the trailer."""
        text = line.strip()
        if self.line <= 30:
            if text == HEADER_LINE:
                self.header_seen = True
            for prefix, attr in ((b"-- Dumped from database version ", "dumped_from"),
                                 (b"-- Dumped by pg_dump version ", "dumped_by")):
                if text.startswith(prefix):
                    setattr(self, attr, text[len(prefix):].decode("utf-8", "replace"))
        if self._state != "normal" or not text:
            return
        if text == TRAILER_LINE:
            self.trailer_seen = True
        elif not text.startswith(b"--") and not _RESTRICT.match(text):
            self.trailer_seen = False


_AMBIGUOUS_ENCODING = ("a non-ASCII byte right before a backslash inside an escape string: in "
                       "some client encodings the two are one character, and the quote "
                       "after it would end the string")


def _identifier(raw: bytes) -> str:
    """An SQL identifier as written: folded to lower case, or a quoted one as it is."""
    text = raw.decode("utf-8", "replace")
    if text.startswith('"'):
        return text[1:-1].replace('""', '"')
    return text.lower()


def _connstr_value(text: str) -> str:
    """A libpq connection-string value: bare, or single-quoted with backslash escapes."""
    if not text.startswith("'"):
        return text
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def _command(line: bytes, at: int) -> str:
    m = re.compile(rb"\\[^\s\\]*").match(line, at)
    word = (m.group() if m else b"\\").decode("utf-8", "replace")
    return word[:24]


def _strip_comments(text: bytes) -> bytes:
    """Leading ``--`` lines and ``/* */`` blocks removed (for matching, not for running)."""
    text = re.sub(rb"/\*.*?\*/", b" ", text, flags=re.S)
    return b"\n".join(ln for ln in text.split(b"\n") if not ln.lstrip().startswith(b"--"))
