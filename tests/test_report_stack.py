"""An auditor's report of the reference stack: one full run, signed, read the way an auditor
reads it: the signature with ssh-keygen and sha256sum, the actions of every ticket proven,
the RTO and RPO baselines drawn, the page in headless Chromium with JavaScript off, the PDF,
and the fleet summary over the bundle."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import StartedStack, VerifyResult, run_verify
from headless_chromium import browser, pdf_text, print_to_pdf
from opsready.catalogue import load_catalogue
from opsready.cli import main
from opsready.report.manifest import MANIFEST_NAME, SIGNATURE_NAME
from opsready.report.signing import KEY_FILE_VARIABLE, NAMESPACE, PRINCIPAL, generate_key_pair

pytestmark = [pytest.mark.stack]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def signed(stack: StartedStack, tmp_path_factory: pytest.TempPathFactory) -> tuple[VerifyResult, Path, str]:
    """One run with every intrusive probe the stack allows, signed with a fresh key."""
    tmp = tmp_path_factory.mktemp("auditor")
    key, public, fingerprint = generate_key_pair(tmp / "keys" / "opsready-signing")
    result = run_verify(stack, tmp, "-n", "0", "--gate", "P0,P1", environ={KEY_FILE_VARIABLE: str(key)})
    assert result.exit_code == 0, result.explain()
    return result, public, fingerprint


def test_the_bundle_is_signed_and_the_standard_tools_accept_it(signed: tuple[VerifyResult, Path, str]) -> None:
    result, public, fingerprint = signed
    bundle = result.out_dir
    assert result.readiness["run"]["signing_key"] == fingerprint
    signers = public.with_name("allowed_signers")
    key_type, key_b64 = public.read_text().split()[:2]
    signers.write_text(f'{PRINCIPAL} namespaces="{NAMESPACE}" {key_type} {key_b64}\n')
    with (bundle / MANIFEST_NAME).open("rb") as manifest:
        verified = subprocess.run(
            [shutil.which("ssh-keygen") or "ssh-keygen", "-Y", "verify", "-f", str(signers), "-I", PRINCIPAL,
             "-n", NAMESPACE, "-s", str(bundle / SIGNATURE_NAME)],
            stdin=manifest, capture_output=True, text=True, timeout=60, check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    hashes = subprocess.run(["sha256sum", "--check", "--strict", MANIFEST_NAME], cwd=bundle,
                            capture_output=True, text=True, timeout=60, check=False)
    assert hashes.returncode == 0, hashes.stdout + hashes.stderr
    assert main(["verify-bundle", str(bundle), "--public-key", str(public)]) == 0


def test_every_action_of_every_ticket_is_proven_on_a_healthy_stack(signed: tuple[VerifyResult, Path, str]) -> None:
    result, _, _ = signed
    catalogue = load_catalogue(ROOT / "config" / "tickets.yaml")
    for t in result.readiness["tickets"]:
        actions = {a["action"]: a for a in t["actions"]}
        assert list(actions) == [a.action for a in catalogue.get(t["id"]).actions]  # type: ignore[union-attr]
        not_done = {name: (a["status"], a["reason"]) for name, a in actions.items() if a["status"] != "done"}
        assert not not_done, f"{t['id']}: {not_done}\n{result.explain([t['id']])}"
        for a in actions.values():
            assert a["outcomes"] and set(a["outcomes"].values()) == {"pass"}


def test_the_rto_and_rpo_baselines_are_drawn_from_the_typed_measures(signed: tuple[VerifyResult, Path, str]) -> None:
    result, _, _ = signed
    history = [json.loads(line) for line in (result.out_dir.parent / "history.jsonl").read_text().splitlines()]
    measures = {m["name"]: m for m in history[-1]["measures"]}
    assert 0 < measures["rto_seconds"]["value"] <= 600
    assert 0 <= measures["backup_age_hours"]["value"] <= 26
    page = (result.out_dir / "index.html").read_text()
    section = page[page.index("<h2>Baselines over time</h2>"):page.index('<div class="report-tickets">')]
    rto = re.search(r"<caption>Restore drill: measured RTO.*?</table>", section, re.S)
    assert rto is not None
    assert re.search(r"<td>[\d.]+ s</td><td>yes</td>", rto.group(0))
    age = re.search(r"<caption>Newest backup&#x27;s age at each run.*?</table>", section, re.S)
    assert age is not None and re.search(r"<td>[\d.]+ h</td><td>yes</td>", age.group(0))
    assert "target 600 s (restore_drill.rto_target_s)" in section
    assert "target 26 h (backups.rpo_hours)" in section


def test_the_report_reads_in_chromium_with_javascript_off_and_prints(signed: tuple[VerifyResult, Path, str],
                                                                    tmp_path: Path) -> None:
    result, _, fingerprint = signed
    index = result.out_dir / "index.html"
    with browser() as page:
        page.open(index.as_uri(), javascript=False)
        box = page.box("#opsready table")
        assert box is not None and box[1] > 200
    with browser() as page:
        page.open(index.as_uri())
        assert page.errors() == []
    pdf = tmp_path / "report.pdf"
    print_to_pdf(index, pdf)
    lines = [ln.strip() for ln in pdf_text(pdf).splitlines() if ln.strip()]
    assert lines[0] == "11 of 11 done · gate P0,P1 passed"
    assert lines[1] == "Readiness"
    assert lines[2].startswith("ticket")
    assert lines[3].startswith("P0-001")
    assert fingerprint in pdf_text(pdf)


def test_the_fleet_summary_over_the_bundle(signed: tuple[VerifyResult, Path, str], tmp_path: Path) -> None:
    result, public, _ = signed
    out = tmp_path / "fleet"
    assert main(["summary", str(result.out_dir), "--out", str(out), "--public-key", str(public)]) == 0
    data = json.loads((out / "summary.json").read_text())
    (row,) = data["environments"]
    assert row["verified"] is True
    assert set(row["statuses"].values()) == {"done"}
