"""`opsready summary`: one fleet view over several environments' bundles, each verified first."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, child_env, default_plan, write_plan
from conftest import cli_in_process as cli
from opsready.report.signing import KEY_FILE_VARIABLE, generate_key_pair

CHECK = """
import pytest
pytestmark = [pytest.mark.ticket("P2-002")]

def test_a():
    '''Preflights are answered'''
    {body}
"""



def run(base: Path, environment: str, out: str, *, failing: bool = False, key: Path | None = None,
        body: str | None = None) -> Path:
    checks = base / f"checks-{out}"
    checks.mkdir()
    body = body or ("assert False, 'ACAO *'" if failing else "pass")
    (checks / "test_p2_002_x.py").write_text(CHECK.format(body=body))
    write_plan(checks / "test_p2_002_x.py", default_plan((checks / "test_p2_002_x.py").read_text()))
    env_file = base / f"{environment}.yaml"
    env_file.write_text(f"name: {environment}\n")
    report = base / "reports" / out
    environ = child_env()
    environ.pop(KEY_FILE_VARIABLE, None)
    if key is not None:
        environ[KEY_FILE_VARIABLE] = str(key)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(checks), "-p", "no:cacheprovider", "-q", "--opsready-env", str(env_file),
         "--opsready-root", str(base), "--opsready-out", str(report), "--opsready-gate", "none"],
        cwd=base, capture_output=True, text=True, timeout=300, env=environ, check=False)
    assert (report / "readiness.json").is_file(), proc.stdout[-2000:] + proc.stderr[-2000:]
    return report


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("fleet")
    (base / "config").mkdir()
    catalogue = yaml.safe_load((ROOT / "config" / "tickets.yaml").read_text(encoding="utf-8"))
    for entry in catalogue["tickets"]:
        entry["actions"] = []
    (base / "config" / "tickets.yaml").write_text(yaml.safe_dump(catalogue, sort_keys=False))
    key, public, _ = generate_key_pair(base / "keys" / "signing")
    return {
        "old": run(base, "production", "prod-old", failing=True, key=key),
        "production": run(base, "production", "prod-new", key=key),
        "staging": run(base, "staging", "staging", failing=True),
        # A run stopped by Ctrl-C inside its only criterion: a partial report.
        "canary": run(base, "canary", "canary", body="raise KeyboardInterrupt"),
        "public": public,
    }


def copy_of(fleet: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """The bundles copied, so a test may alter them."""
    copied = {}
    for name in ("old", "production", "staging"):
        copied[name] = tmp_path / "reports" / fleet[name].name
        shutil.copytree(fleet[name], copied[name])
    return copied


def test_one_row_per_environment_each_cell_a_badge_linking_into_its_bundle(fleet: dict[str, Path],
                                                                           tmp_path: Path) -> None:
    out = tmp_path / "fleet"
    code, text, err = cli("summary", str(fleet["old"]), str(fleet["production"]), str(fleet["staging"]),
                          "--out", str(out))
    assert (code, err) == (0, ""), text + err
    data = json.loads((out / "summary.json").read_text())
    assert data["schema"] == "opsready.fleet/v1"
    rows = {r["environment"]: r for r in data["environments"]}
    assert list(rows) == ["production", "staging"]
    # The newest run of an environment stands for it.
    assert rows["production"]["run_id"] == "prod-new"
    assert rows["production"]["statuses"]["P2-002"] == "done"
    assert rows["staging"]["statuses"]["P2-002"] == "open"
    assert all(r["verified"] and r["problems"] == [] for r in rows.values())
    assert 0 <= rows["staging"]["age_hours"] < 1
    page = (out / "summary.html").read_text()
    assert rows["production"]["report"].endswith("prod-new/index.html")
    assert '<a class="badge done" href="' in page and 'prod-new/index.html#ticket-P2-002"' in page
    assert '<a class="badge open" href="' in page and 'staging/index.html#ticket-P2-002"' in page
    assert "every bundle verified" in page and "min old" in page
    assert "<script" not in page and "http" not in page.lower()
    assert text.splitlines()[-1] == f"summary: {out / 'summary.html'}"


def test_a_partial_run_is_marked_on_its_row(fleet: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "fleet"
    code, text, err = cli("summary", str(fleet["production"]), str(fleet["canary"]), "--out", str(out))
    assert (code, err) == (0, ""), text + err
    rows = {r["environment"]: r for r in json.loads((out / "summary.json").read_text())["environments"]}
    assert rows["canary"]["partial"] == "the run did not finish"
    assert rows["production"]["partial"] is None
    assert "partial: the run did not finish" in (out / "summary.html").read_text()
    assert "canary: run canary, " in text and "bundle verified; partial: the run did not finish" in text


def test_a_bundle_that_fails_verification_is_marked_and_not_trusted(fleet: dict[str, Path], tmp_path: Path) -> None:
    bundles = copy_of(fleet, tmp_path)
    target = bundles["staging"] / "readiness.json"
    target.write_text(target.read_text().replace('"status": "open"', '"status": "done"'))  # someone "fixes" the verdict
    out = tmp_path / "fleet"
    code, text, _ = cli("summary", str(bundles["production"]), str(bundles["staging"]), "--out", str(out))
    assert code == 1
    rows = {r["environment"]: r for r in json.loads((out / "summary.json").read_text())["environments"]}
    assert rows["staging"]["verified"] is False
    assert rows["staging"]["problems"] == ["changed: readiness.json"]
    assert rows["production"]["verified"] is True
    page = (out / "summary.html").read_text()
    assert "1 bundle FAILED verification" in page
    assert "bundle FAILED verification: changed: readiness.json" in page
    assert "? untrusted (done)" in page
    assert "staging: run staging, 1 done, 10 unverified; bundle FAILED: changed: readiness.json" in text


def test_with_a_public_key_an_unsigned_bundle_fails(fleet: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "fleet"
    code, _, _ = cli("summary", str(fleet["production"]), str(fleet["staging"]), "--out", str(out),
                     "--public-key", str(fleet["public"]))
    assert code == 1
    rows = {r["environment"]: r for r in json.loads((out / "summary.json").read_text())["environments"]}
    assert rows["production"]["verified"] is True
    assert rows["production"]["signed_by"].startswith("SHA256:")
    assert rows["staging"]["problems"][0] == "signature: MANIFEST.sha256.sig is missing: the bundle is not signed"


def test_a_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = cli("summary", str(tmp_path / "absent"), "--out", str(tmp_path / "fleet"))
    assert code == 4
    assert "is not a report directory" in err
