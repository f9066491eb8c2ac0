"""Tamper evidence for a report directory: ``MANIFEST.sha256`` and ``opsready verify-bundle``.

The manifest lists the sha256 of every file under the report directory, one line per file,
in the format ``sha256sum`` writes and reads (``<hex>  <relative/posix/path>``), sorted by
path. So an auditor can check a bundle without opsready::

    cd reports/20250101T020000Z-production && sha256sum --check --strict MANIFEST.sha256

``sha256sum --check`` does not notice files added after the run; ``opsready verify-bundle``
does, and reports each changed, missing or extra file.
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TextIO

from opsready._options import ExitCode

__all__ = [
    "MANIFEST_NAME",
    "SIGNATURE_NAME",
    "BundleCheck",
    "verify_bundle",
    "verify_bundle_command",
    "write_manifest",
]

MANIFEST_NAME = "MANIFEST.sha256"
# The detached signature of the manifest (``report/signing.py``). It is written after the
# manifest, so the manifest cannot list it; it is not an extra file either.
SIGNATURE_NAME = "MANIFEST.sha256.sig"

_LINE = re.compile(r"^(?P<escaped>\\)?(?P<digest>[0-9a-fA-F]{64}) [ *](?P<path>.+)$")
_CHUNK = 1 << 20


@dataclass
class BundleCheck:
    """The result of checking one report directory against its manifest.

    ``manifest_error`` is set when the manifest itself is missing or unreadable; then the
    file lists are empty and the bundle is not intact.
    """

    report_dir: Path
    files: int = 0
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    manifest_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.manifest_error is None and not (self.changed or self.missing or self.extra)

    def describe(self) -> list[str]:
        """One line per problem, e.g. ``changed: readiness.json``; empty when intact."""
        if self.manifest_error is not None:
            return [f"manifest: {self.manifest_error}"]
        return (
            [f"changed: {p}" for p in self.changed]
            + [f"missing: {p}" for p in self.missing]
            + [f"extra: {p}" for p in self.extra]
        )


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _bundle_files(report_dir: Path) -> dict[str, Path]:
    """Every file under the directory except the manifest and its signature, keyed by
    relative POSIX path."""
    found: dict[str, Path] = {}
    for path in report_dir.rglob("*"):
        if not path.is_file():
            continue
        rel = path.relative_to(report_dir).as_posix()
        if rel in (MANIFEST_NAME, SIGNATURE_NAME):
            continue
        found[rel] = path
    return dict(sorted(found.items()))


def _escape(rel: str) -> tuple[str, str]:
    """``sha256sum`` escapes backslashes and newlines in names and marks such lines with ``\\``."""
    if "\\" in rel or "\n" in rel or "\r" in rel:
        escaped = rel.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
        return "\\", escaped
    return "", rel


def _unescape(rel: str) -> str:
    return re.sub(
        r"\\(.)", lambda m: {"n": "\n", "r": "\r", "\\": "\\"}.get(m.group(1), m.group(0)), rel
    )


def write_manifest(report_dir: Path) -> Path:
    """Write ``MANIFEST.sha256`` over every file under ``report_dir`` and return its path.

    Lines are sorted by path and ``sha256sum``-compatible. An existing manifest is replaced;
    it never lists itself.
    """
    report_dir = Path(report_dir)
    lines = []
    for rel, path in _bundle_files(report_dir).items():
        mark, shown = _escape(rel)
        lines.append(f"{mark}{_digest(path)}  {shown}\n")
    manifest = report_dir / MANIFEST_NAME
    # Written through a temporary name, so a reader never sees half a manifest.
    tmp = report_dir / f".{MANIFEST_NAME}.tmp"
    tmp.write_text("".join(lines), encoding="utf-8", newline="\n")
    tmp.replace(manifest)
    return manifest


def _read_manifest(manifest: Path) -> tuple[dict[str, str] | None, str | None]:
    """Parse a manifest into ``{path: digest}``, or return a one-line reason it is unusable."""
    if not manifest.is_file():
        return None, (
            f"{MANIFEST_NAME} is missing; this directory was not written by a complete "
            f"opsready run, or the manifest was removed"
        )
    try:
        text = manifest.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{MANIFEST_NAME} cannot be read ({type(exc).__name__})"
    entries: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        m = _LINE.match(line)
        if m is None:
            return None, (
                f"{MANIFEST_NAME} line {number} is malformed; expected '<64 hex>  <path>' "
                f"as sha256sum writes it"
            )
        rel = _unescape(m.group("path")) if m.group("escaped") else m.group("path")
        pure = PurePosixPath(rel)
        if pure.is_absolute() or ".." in pure.parts or rel == MANIFEST_NAME:
            return None, (
                f"{MANIFEST_NAME} line {number} names {rel!r}, which is not a file inside "
                f"the report directory"
            )
        if rel in entries:
            return None, f"{MANIFEST_NAME} line {number} lists {rel!r} a second time"
        entries[rel] = m.group("digest").lower()
    return entries, None


def verify_bundle(report_dir: Path) -> BundleCheck:
    """Check every file of a report directory against its ``MANIFEST.sha256``."""
    report_dir = Path(report_dir)
    check = BundleCheck(report_dir=report_dir)
    entries, error = _read_manifest(report_dir / MANIFEST_NAME)
    if entries is None:
        check.manifest_error = error
        return check
    present = _bundle_files(report_dir)
    check.files = len(entries)
    for rel, digest in entries.items():
        path = present.get(rel)
        if path is None:
            check.missing.append(rel)
        elif _digest(path) != digest:
            check.changed.append(rel)
    check.extra = [rel for rel in present if rel not in entries]
    check.changed.sort()
    check.missing.sort()
    return check


def verify_bundle_command(report_dir: Path, *, stdout: TextIO | None = None,
                          stderr: TextIO | None = None) -> ExitCode:
    """``opsready verify-bundle DIR`` (the CLI parses the arguments): print the verdict and
    return the exit code."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    if not report_dir.is_dir():
        what = "is not a directory" if report_dir.exists() else "does not exist"
        print(
            f"opsready verify-bundle: {report_dir} {what}; pass a report directory such as "
            f"reports/latest",
            file=err,
        )
        return ExitCode.USAGE
    check = verify_bundle(report_dir)
    if check.ok:
        print(f"intact: {check.files} files", file=out)
        return ExitCode.OK
    for line in check.describe():
        print(line, file=out)
    if check.manifest_error is None:
        print(
            f"not intact: {len(check.changed)} changed, {len(check.missing)} missing, "
            f"{len(check.extra)} extra against {MANIFEST_NAME}",
            file=out,
        )
    return ExitCode.FAILED
