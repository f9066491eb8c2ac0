"""Runbooks: read them from the GitHub repository or from disk, find their sections and how
much each one says, and resolve the ``runbook_url`` of an alert rule.

A ``runbook_url`` may be a Go template, as Prometheus renders annotations: ``{{ $labels.x }}``
(and ``{{ .Labels.x }}``) are expanded with the rule's labels before the link is followed. A
template that needs more than the rule's own labels (a label only the firing series carries)
cannot be followed, and says so (``judged=False``).

``https://github.com/<repo>/blob/<ref>/<path>`` links of the configured repository are read
through the API. A branch name may contain ``/`` (``release/2024.06``), so the split between
ref and path is found by trying the shortest ref first, as GitHub itself resolves such URLs.

A runbook or a link target that does not exist is data (``None``, ``resolves=False``); a
source that cannot be reached raises a ``ProbeError``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

import httpx

from opsready._errors import AccessRefused, MissingInput
from opsready.config import RunbooksConfig
from opsready.evidence import redactor
from opsready.probes._http import HttpTarget

__all__ = [
    "GithubFiles",
    "LinkCheck",
    "RunbookLibrary",
    "expand_template",
    "headings",
    "missing_sections",
    "section_words",
]

_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.+?)\s*#*\s*$")
_SETEXT = re.compile(r"^\s{0,3}(=+|-+)\s*$")
_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_TEMPLATE = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}")
_LABEL_REF = re.compile(r"^(?:\$labels|\.Labels)\.([A-Za-z_][A-Za-z0-9_]*)$")
_WORD = re.compile(r"[^\W_](?:[\w'’-]*\w)?")
# The most ``/``-separated parts a branch name is tried with in a blob link.
_MAX_REF_PARTS = 6


class GithubFiles(Protocol):
    """What the library needs from the GitHub probe."""

    @property
    def repo(self) -> str: ...

    def get_file(self, path: str, ref: str | None = None) -> str | None: ...


@dataclass(frozen=True)
class LinkCheck:
    """A followed link. ``url`` is the link as followed (templates expanded); ``judged`` is
    False when it could not be followed at all (``detail`` says why)."""

    url: str
    resolves: bool
    detail: str
    judged: bool = True


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
        splits = self._github_blob(parts.netloc, parts.path)
        if splits:
            for ref, path in splits:
                if self._github().get_file(path, ref=ref) is not None:
                    return LinkCheck(url, True, f"{path}@{ref} exists")
            tried = ", ".join(f"{path}@{ref}" for ref, path in splits)
            return LinkCheck(url, False, f"no such file in the repository (tried {tried})")
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

    def resolve_rule_link(self, url: str, labels: Mapping[str, str]) -> LinkCheck:
        """``resolve`` after expanding the link's ``{{ $labels.x }}`` with ``labels``, the
        labels of a firing series: Prometheus fills ``$labels`` from the alert's series alone,
        not from the rule's own labels."""
        expanded, problem = expand_template(url, labels)
        if problem:
            return LinkCheck(url, False, problem, judged=False)
        return self.resolve(expanded)

    def _github_blob(self, host: str, path: str) -> list[tuple[str, str]]:
        """The (ref, path) splits of a blob link of the configured repository, shortest ref
        first; empty for any other link."""
        if self.github is None or host.lower() != "github.com":
            return []
        repo = self.github.repo.strip("/")
        prefix = f"/{repo}/blob/"
        if not path.lower().startswith(prefix.lower()):
            return []
        parts = [p for p in unquote(path[len(prefix):]).split("/") if p]
        return [("/".join(parts[:n]), "/".join(parts[n:]))
                for n in range(1, min(len(parts), _MAX_REF_PARTS + 1))]


def expand_template(text: str, labels: Mapping[str, str]) -> tuple[str, str]:
    """Expand ``{{ $labels.x }}`` and ``{{ .Labels.x }}`` in an annotation with ``labels``
    (a firing series' labels).

    Returns the expanded text and an empty problem, or the text and why it cannot be
    expanded: a label not given, or a template action other than a label."""
    problems: list[str] = []

    def sub(m: re.Match[str]) -> str:
        ref = _LABEL_REF.match(m.group(1).strip())
        if ref is None:
            problems.append(f"the template {m.group(0)!r} is not a label reference")
            return m.group(0)
        name = ref.group(1)
        if name not in labels:
            problems.append(f"{m.group(0)!r} needs label {name!r} of the firing series "
                            f"(Prometheus fills $labels from the alert's series, not from the "
                            f"rule's labels), so the link is known only once the alert fires")
            return m.group(0)
        return labels[name]

    expanded = _TEMPLATE.sub(sub, text)
    return expanded, "; ".join(problems)


def _sections(text: str) -> list[tuple[int, str, list[str]]]:
    """(level, heading, body lines) for every markdown heading (ATX ``## x`` and setext),
    outside code fences; the body runs to the next heading."""
    found: list[tuple[int, str, list[str]]] = []
    fenced = False
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            atx = _HEADING.match(line)
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            if atx:
                found.append((len(atx.group(1)), atx.group(2).strip(), []))
                continue
            if line.strip() and _SETEXT.match(nxt) and not _HEADING.match(line):
                found.append((1 if nxt.strip().startswith("=") else 2, line.strip(), []))
                continue
            if _SETEXT.match(line) and found and found[-1][1] == lines[i - 1].strip():
                continue  # the underline of the setext heading just taken
        if found:
            found[-1][2].append(line)
    return found


def headings(text: str) -> list[str]:
    """The markdown headings of ``text`` (ATX ``## x`` and setext), outside code fences."""
    return [heading for _, heading, _ in _sections(text)]


def section_words(text: str, sections: list[str]) -> dict[str, int | None]:
    """For each of ``sections``: the number of words under its heading, subsections
    included, up to the next heading of the same or a higher level; ``None`` when no heading
    starts with the section's name (case-insensitive; numbering such as ``2.`` and trailing
    punctuation are ignored)."""
    parsed = _sections(text)
    out: dict[str, int | None] = {}
    for section in sections:
        key = section.strip().lower()
        start = next((i for i, (_, h, _) in enumerate(parsed) if _matches(h, key)), None)
        if start is None:
            out[section] = None
            continue
        level = parsed[start][0]
        words = sum(len(_WORD.findall(line)) for line in parsed[start][2])
        for lvl, heading, body in parsed[start + 1:]:
            if lvl <= level:
                break
            words += len(_WORD.findall(heading)) + sum(len(_WORD.findall(ln)) for ln in body)
        out[section] = words
    return out


def missing_sections(text: str, sections: list[str]) -> list[str]:
    """The ``sections`` that no heading of ``text`` starts with."""
    return [s for s, words in section_words(text, sections).items() if words is None]


def _matches(heading: str, key: str) -> bool:
    name = _heading_key(heading)
    return name == key or name.startswith(key + " ") or name.startswith(key + ":")


def _heading_key(heading: str) -> str:
    text = re.sub(r"^\s*(\d+(\.\d+)*[.)]?\s+)", "", heading)
    return text.strip().strip("*_`").rstrip(":").strip().lower()
