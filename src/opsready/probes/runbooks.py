"""Runbooks: read them from the GitHub repository or from disk, find their sections, and
resolve the ``runbook_url`` of an alert rule.

A runbook or a link target that does not exist is data (``None``, ``resolves=False``); a
source that cannot be reached raises a ``ProbeError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

import httpx

from opsready._errors import AccessRefused, MissingInput
from opsready.config import RunbooksConfig
from opsready.evidence import redactor
from opsready.probes._http import HttpTarget

__all__ = ["GithubFiles", "LinkCheck", "RunbookLibrary", "headings", "missing_sections"]

_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.+?)\s*#*\s*$")
_SETEXT = re.compile(r"^\s{0,3}(=+|-+)\s*$")
_FENCE = re.compile(r"^\s{0,3}(```|~~~)")


class GithubFiles(Protocol):
    """What the library needs from the GitHub probe."""

    @property
    def repo(self) -> str: ...

    def get_file(self, path: str, ref: str | None = None) -> str | None: ...


@dataclass(frozen=True)
class LinkCheck:
    url: str
    resolves: bool
    detail: str


class RunbookLibrary:
    """The configured runbooks and the links alert rules point at."""

    def __init__(
        self,
        cfg: RunbooksConfig,
        *,
        timeout: float,
        github: GithubFiles | None = None,
        base_dir: Path | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.cfg = cfg
        self.timeout = timeout
        self.github = github
        self.base_dir = base_dir or Path.cwd()
        self._transport = transport
        self._http: dict[str, HttpTarget] = {}

    def close(self) -> None:
        for target in self._http.values():
            target.close()
        self._http.clear()

    def read(self, path: str) -> str | None:
        """The text of a runbook from the configured source, or ``None`` when it is absent."""
        if self.cfg.source == "local":
            file = Path(path)
            if not file.is_absolute():
                file = self.base_dir / file
            try:
                return file.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                return None
            except IsADirectoryError:
                return None
            except OSError as exc:
                raise MissingInput(f"runbooks: cannot read {file}: {exc.strerror}") from None
        return self._github().get_file(path)

    def resolve(self, url: str) -> LinkCheck:
        """Does a ``runbook_url`` lead to a runbook?

        - ``github:<path>``: the file exists in the configured repository.
        - ``https://github.com/<repo>/blob/<ref>/<path>`` of the configured repository: the
          file exists at that ref (through the API, so private repositories work).
        - other ``http(s)://`` URLs: a GET (following redirects) answers 200.
        """
        link = url.strip()
        if link.startswith("github:"):
            path = link.removeprefix("github:").lstrip("/")
            found = self._github().get_file(path) is not None
            repo = self._github().repo
            return LinkCheck(url, found, f"{path} {'exists' if found else 'is missing'} in {repo}")
        parts = urlsplit(link)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return LinkCheck(url, False, "not a link: expected http(s)://… or github:<path>")
        blob = self._github_blob(parts.netloc, parts.path)
        if blob is not None:
            ref, path = blob
            found = self._github().get_file(path, ref=ref) is not None
            return LinkCheck(url, found, f"{path}@{ref} {'exists' if found else 'is missing'}")
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self._http:
            self._http[origin] = HttpTarget("runbook link", origin, timeout=self.timeout,
                                            transport=self._transport, follow_redirects=True)
        resp = self._http[origin].request("GET", link)
        if resp.status_code in (401, 403):
            # Behind a login the page cannot be seen, which says nothing about whether it exists.
            raise AccessRefused(
                f"runbook link: GET {redactor.text(link)} answered {resp.status_code}; the "
                f"runbook sits behind a login, so it cannot be checked; link a page readable "
                f"without one, or the repository file as github:<path>"
            )
        ok = resp.status_code == 200
        return LinkCheck(url, ok, f"HTTP {resp.status_code}")

    def _github(self) -> GithubFiles:
        if self.github is None:
            raise MissingInput(
                "runbooks: reading from GitHub needs the github section (repo and token) in "
                "the environment config"
            )
        return self.github

    def _github_blob(self, host: str, path: str) -> tuple[str, str] | None:
        if self.github is None or host.lower() != "github.com":
            return None
        repo = self.github.repo.strip("/")
        prefix = f"/{repo}/blob/"
        if not path.lower().startswith(prefix.lower()):
            return None
        ref, _, file = unquote(path[len(prefix):]).partition("/")
        return (ref, file) if ref and file else None


def headings(text: str) -> list[str]:
    """The markdown headings of ``text`` (ATX ``## x`` and setext), outside code fences."""
    found: list[str] = []
    fenced = False
    previous = ""
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            previous = ""
            continue
        if fenced:
            continue
        atx = _HEADING.match(line)
        if atx:
            found.append(atx.group(2).strip())
        elif _SETEXT.match(line) and previous.strip() and not _HEADING.match(previous):
            found.append(previous.strip())
        previous = line
    return found


def missing_sections(text: str, sections: list[str]) -> list[str]:
    """The ``sections`` that no heading of ``text`` starts with (case-insensitive; leading
    numbering such as ``2.`` and trailing punctuation are ignored)."""
    names = [_heading_key(h) for h in headings(text)]
    missing = []
    for section in sections:
        key = section.strip().lower()
        if not any(n == key or n.startswith(key + " ") or n.startswith(key + ":") for n in names):
            missing.append(section)
    return missing


def _heading_key(heading: str) -> str:
    text = re.sub(r"^\s*(\d+(\.\d+)*[.)]?\s+)", "", heading)
    return text.strip().strip("*_`").rstrip(":").strip().lower()
