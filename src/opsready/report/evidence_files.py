"""Evidence items have a size bound in ``readiness.json`` and ``index.html``.

A server can send back a body of any size, and a check may record it. Each evidence item
larger than ``evidence_item_max_bytes`` (64 KiB by default) as JSON is cut to fit; the cut item
says how large it was and names the file of the bundle that holds it whole
(``evidence/<ticket>/<criterion>/<n>-<name>``), which the HTML links. The files are written from
the redacted model, so they carry no more than the report itself would, and the manifest
covers them like every other file.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

from opsready.evidence import AttachmentItem, EvidenceCut, EvidenceItem, MeasureItem, TableItem, ValueItem
from opsready.report.model import Readiness

__all__ = ["EVIDENCE_DIR", "bound_evidence"]

EVIDENCE_DIR = "evidence"
_MARK = "\n[... cut: the whole item is in the bundle file named in the report]"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")[:80] or "item"


def _size(item: EvidenceItem) -> int:
    return len(item.model_dump_json().encode("utf-8"))


def _prefix(text: str, limit: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 encoding fits in ``limit`` bytes."""
    return text.encode("utf-8")[:max(limit, 0)].decode("utf-8", "ignore")


def _whole(item: EvidenceItem) -> tuple[bytes, str]:
    """The item's full content as file bytes, and the file's extension. Text documents keep
    a text extension whatever their type, so opening one never runs it."""
    if isinstance(item, AttachmentItem):
        if item.encoding == "base64":
            return base64.b64decode(item.value), ".bin"
        ext = {"text/markdown": ".md", "application/json": ".json"}.get(item.mime, ".txt")
        return item.value.encode("utf-8"), ext
    if isinstance(item, TableItem):
        return json.dumps({"note": item.note, "rows": item.rows}, indent=2, sort_keys=True).encode("utf-8"), ".json"
    value: Any = item.model_dump(mode="json")["value"] if isinstance(item, ValueItem | MeasureItem) else None
    if isinstance(value, str):
        return value.encode("utf-8"), ".txt"
    return json.dumps(value, indent=2, sort_keys=True).encode("utf-8"), ".json"


def _kept(item: EvidenceItem, room: int) -> EvidenceItem:
    """The item with its content cut to about ``room`` bytes."""
    if isinstance(item, AttachmentItem):
        value = "" if item.encoding == "base64" else _prefix(item.value, room) + _MARK
        return item.model_copy(update={"value": value})
    if isinstance(item, TableItem):
        rows: list[dict[str, Any]] = []
        used = 0
        for row in item.rows:
            used += len(json.dumps(row, separators=(",", ":")).encode("utf-8")) + 1
            if used > room:
                break
            rows.append(row)
        return item.model_copy(update={"rows": rows, "note": _prefix(item.note, 1024)})
    if isinstance(item, ValueItem):
        text = item.value if isinstance(item.value, str) else json.dumps(item.value, indent=2, sort_keys=True)
        return item.model_copy(update={"value": _prefix(text, room) + _MARK})
    return item


def _cut(item: EvidenceItem, limit: int, file: str, original: int) -> EvidenceItem:
    # Leave room for the item's own fields (name, kind, the cut record) within the bound; JSON
    # escaping can make the kept text larger than its bytes, so shrink until it fits.
    room = max(limit - 512 - len(item.name.encode("utf-8")), 256)
    kept = _kept(item, room)
    for _ in range(8):
        size = _size(kept) + 200  # the cut record itself
        if size <= limit or room <= 256:
            break
        room = max(int(room * limit / size * 0.95), 256)
        kept = _kept(item, room)
    cut = EvidenceCut(original_bytes=original, kept_bytes=_size(kept), file=file)
    return kept.model_copy(update={"cut": cut})


def bound_evidence(readiness: Readiness, out_dir: Path, limit: int) -> Readiness:
    """The readiness model with every evidence item over ``limit`` bytes cut to fit, and the
    whole items written under ``out_dir/evidence/``."""
    tickets = []
    changed = False
    for ticket in readiness.tickets:
        criteria = []
        for criterion in ticket.criteria:
            items: list[EvidenceItem] = []
            for n, item in enumerate(criterion.evidence):
                size = _size(item)
                if size <= limit or item.cut is not None:
                    items.append(item)
                    continue
                data, ext = _whole(item)
                stem = f"{n}-{_slug(item.name)}"
                rel = Path(EVIDENCE_DIR, _slug(ticket.id), _slug(criterion.test_name),
                           stem if stem.endswith(ext) else stem + ext)
                target = out_dir / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                items.append(_cut(item, limit, rel.as_posix(), size))
                changed = True
            criteria.append(criterion.model_copy(update={"evidence": items}))
        tickets.append(ticket.model_copy(update={"criteria": criteria}))
    if not changed:
        return readiness
    # Validated again, so the cut model is still a valid readiness document.
    return Readiness.model_validate(readiness.model_copy(update={"tickets": tickets}).model_dump(by_alias=True))
