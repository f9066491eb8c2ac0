"""Structured Field Values for HTTP (RFC 9651): the parsing algorithms of its section 4.2, for
the list and dictionary fields opsready reads (the IETF RateLimit fields).

Values come back as Python values: Integer ``int``, Decimal ``float``, String ``str``, Token
``Token`` (a ``str``), Byte Sequence ``bytes``, Boolean ``bool``, Date ``Date``, Display String
``DisplayString``. An Item is ``(value, params)``; an Inner List is ``(list of Items,
params)``. Parsing is all or nothing, as the RFC asks: any syntax error is ``SfError``, and a
field that fails is to be ignored whole.
"""

from __future__ import annotations

import base64
import binascii
import string
from dataclasses import dataclass

__all__ = ["Date", "DisplayString", "InnerList", "Item", "SfError", "Token", "parse_dictionary",
           "parse_list"]


class SfError(ValueError):
    """The field value is not a valid Structured Field of the asked type."""


class Token(str):
    """An sf-token, told apart from an sf-string."""

    __slots__ = ()


@dataclass(frozen=True)
class Date:
    """An sf-date: seconds since the epoch."""

    seconds: int


class DisplayString(str):
    """An sf-displaystring, decoded."""

    __slots__ = ()


BareItem = int | float | str | bytes | bool | Date
Params = dict[str, BareItem]
Item = tuple[BareItem, Params]
InnerList = tuple[list[Item], Params]
Member = Item | InnerList

_LCALPHA = set(string.ascii_lowercase)
_DIGITS = set(string.digits)
_KEY_FIRST = _LCALPHA | {"*"}
_KEY_REST = _LCALPHA | _DIGITS | set("_-.*")
_TCHAR = set(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")
_TOKEN_REST = _TCHAR | {":", "/"}
_BASE64 = set(string.ascii_letters + string.digits + "+/=")
_HEX_LOWER = set("0123456789abcdef")


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self) -> str:
        char = self.peek()
        if not char:
            raise SfError("the value ends too early")
        self.pos += 1
        return char

    def empty(self) -> bool:
        return self.pos >= len(self.text)

    def skip(self, chars: str) -> None:
        while self.peek() and self.peek() in chars:
            self.pos += 1


def _start(text: str) -> _Reader:
    try:
        text.encode("ascii")
    except UnicodeEncodeError as exc:
        raise SfError("a structured field is ASCII only") from exc
    reader = _Reader(text)
    reader.skip(" ")
    return reader


def _end(reader: _Reader) -> None:
    reader.skip(" ")
    if not reader.empty():
        raise SfError(f"unexpected {reader.peek()!r} at position {reader.pos}")


def parse_list(text: str) -> list[Member]:
    """An sf-list (RFC 9651 §4.2.1). An empty value is an empty list."""
    reader = _start(text)
    members: list[Member] = []
    while not reader.empty():
        members.append(_item_or_inner_list(reader))
        if _after_member(reader):
            break
    _end(reader)
    return members


def parse_dictionary(text: str) -> dict[str, Member]:
    """An sf-dictionary (RFC 9651 §4.2.2); a key given twice keeps its last value."""
    reader = _start(text)
    members: dict[str, Member] = {}
    while not reader.empty():
        key = _key(reader)
        if reader.peek() == "=":
            reader.take()
            members[key] = _item_or_inner_list(reader)
        else:
            members[key] = (True, _parameters(reader))
        if _after_member(reader):
            break
    _end(reader)
    return members


def _after_member(reader: _Reader) -> bool:
    """OWS, then either the end (True) or a comma followed by another member (False)."""
    reader.skip(" \t")
    if reader.empty():
        return True
    if reader.take() != ",":
        raise SfError(f"expected a comma at position {reader.pos - 1}")
    reader.skip(" \t")
    if reader.empty():
        raise SfError("a trailing comma")
    return False


def _item_or_inner_list(reader: _Reader) -> Member:
    if reader.peek() == "(":
        return _inner_list(reader)
    return _item(reader)


def _inner_list(reader: _Reader) -> InnerList:
    reader.take()
    items: list[Item] = []
    while True:
        reader.skip(" ")
        if reader.peek() == ")":
            reader.take()
            return items, _parameters(reader)
        items.append(_item(reader))
        if reader.peek() not in (" ", ")"):
            raise SfError(f"expected a space or ')' at position {reader.pos}")


def _item(reader: _Reader) -> Item:
    return _bare_item(reader), _parameters(reader)


def _parameters(reader: _Reader) -> Params:
    params: Params = {}
    while reader.peek() == ";":
        reader.take()
        reader.skip(" ")
        key = _key(reader)
        value: BareItem = True
        if reader.peek() == "=":
            reader.take()
            value = _bare_item(reader)
        params[key] = value
    return params


def _key(reader: _Reader) -> str:
    if reader.peek() not in _KEY_FIRST or not reader.peek():
        raise SfError(f"a key must start with a lowercase letter or '*' at position {reader.pos}")
    start = reader.pos
    while reader.peek() and reader.peek() in _KEY_REST:
        reader.pos += 1
    return reader.text[start:reader.pos]


def _bare_item(reader: _Reader) -> BareItem:
    char = reader.peek()
    if char == "-" or (char and char in _DIGITS):
        return _number(reader)
    if char == '"':
        return _string(reader)
    if char == "*" or (char and char in string.ascii_letters):
        return _token(reader)
    if char == ":":
        return _bytes(reader)
    if char == "?":
        return _boolean(reader)
    if char == "@":
        reader.take()
        number = _number(reader)
        if not isinstance(number, int):
            raise SfError("a date is an integer")
        return Date(number)
    if char == "%":
        return _display_string(reader)
    raise SfError(f"no item starts with {char!r} (position {reader.pos})" if char else
                  "the value ends where an item should be")


def _number(reader: _Reader) -> int | float:
    sign = 1
    if reader.peek() == "-":
        reader.take()
        sign = -1
    if not reader.peek() or reader.peek() not in _DIGITS:
        raise SfError(f"expected a digit at position {reader.pos}")
    start = reader.pos
    decimal = False
    while reader.peek() and (reader.peek() in _DIGITS or (reader.peek() == "." and not decimal)):
        if reader.peek() == ".":
            if reader.pos - start > 12:
                raise SfError("a decimal has at most 12 integer digits")
            decimal = True
        reader.pos += 1
        if not decimal and reader.pos - start > 15:
            raise SfError("an integer has at most 15 digits")
        if decimal and reader.pos - start > 16:
            raise SfError("a decimal has at most 16 characters")
    digits = reader.text[start:reader.pos]
    if not decimal:
        return sign * int(digits)
    if digits.endswith(".") or len(digits.split(".")[1]) > 3:
        raise SfError("a decimal has one to three fractional digits")
    return sign * float(digits)


def _string(reader: _Reader) -> str:
    reader.take()
    out: list[str] = []
    while True:
        char = reader.take()
        if char == "\\":
            escaped = reader.take()
            if escaped not in ('"', "\\"):
                raise SfError("only '\"' and '\\' may be escaped in a string")
            out.append(escaped)
        elif char == '"':
            return "".join(out)
        elif not " " <= char <= "~":
            raise SfError("a string holds printable ASCII only")
        else:
            out.append(char)


def _token(reader: _Reader) -> Token:
    start = reader.pos
    reader.pos += 1
    while reader.peek() and reader.peek() in _TOKEN_REST:
        reader.pos += 1
    return Token(reader.text[start:reader.pos])


def _bytes(reader: _Reader) -> bytes:
    reader.take()
    start = reader.pos
    while reader.peek() != ":":
        if not reader.peek() or reader.peek() not in _BASE64:
            raise SfError("a byte sequence is base64 between colons")
        reader.pos += 1
    encoded = reader.text[start:reader.pos]
    reader.take()
    try:
        return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error as exc:
        raise SfError("a byte sequence is base64 between colons") from exc


def _boolean(reader: _Reader) -> bool:
    reader.take()
    char = reader.take()
    if char not in ("0", "1"):
        raise SfError("a boolean is ?0 or ?1")
    return char == "1"


def _display_string(reader: _Reader) -> DisplayString:
    reader.take()
    if reader.take() != '"':
        raise SfError("a display string starts with %\"")
    raw = bytearray()
    while True:
        char = reader.take()
        if char == "%":
            digits = reader.take() + reader.take()
            if not set(digits) <= _HEX_LOWER:
                raise SfError("a display string escapes bytes as % and two lowercase hex digits")
            raw.append(int(digits, 16))
        elif char == '"':
            try:
                return DisplayString(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise SfError("a display string is UTF-8") from exc
        elif not " " <= char <= "~":
            raise SfError("a display string holds printable ASCII and escapes only")
        else:
            raw.append(ord(char))
