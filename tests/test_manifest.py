"""MANIFEST.sha256 and `opsready verify-bundle`: a report directory is tamper-evident."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import cli_in_process, write_plan
from opsready.report.manifest import MANIFEST_NAME, verify_bundle, write_manifest

ROOT = Path(__file__).resolve().parents[1]
OPSREADY = ROOT / ".venv" / "bin" / "opsready"


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A report directory shaped like a real run, with its manifest written."""
    report = tmp_path / "20250101T020000Z-production"
    (report / "evidence").mkdir(parents=True)
    (report / "readiness.json").write_text(
        json.dumps({"schema": "opsready.readiness/v1", "tickets": [{"id": "P0-001"}]}),
        encoding="utf-8",
    )
    (report / "index.html").write_text("<html><body>readiness</body></html>\n", encoding="utf-8")
    (report / "junit.xml").write_text("<testsuites/>\n", encoding="utf-8")
    (report / "readiness.prom").write_text("# HELP x y\n", encoding="utf-8")
    (report / "evidence" / "P1-002 drill report.txt").write_bytes(b"restored 4 tables\x00\xff")
    write_manifest(report)
    return report


def run_main(argv: list[str]) -> tuple[int, str, str]:
    """``opsready verify-bundle ARGV`` in this process: exit code, stdout, stderr."""
    return cli_in_process("verify-bundle", *argv)


def test_manifest_lists_every_file_sorted_with_its_sha256(bundle: Path) -> None:
    lines = (bundle / MANIFEST_NAME).read_text(encoding="utf-8").splitlines()
    paths = [line.split("  ", 1)[1] for line in lines]
    assert paths == sorted(paths)
    assert paths == [
        "evidence/P1-002 drill report.txt",
        "index.html",
        "junit.xml",
        "readiness.json",
        "readiness.prom",
    ]
    for line in lines:
        digest, rel = line.split("  ", 1)
        assert digest == hashlib.sha256((bundle / rel).read_bytes()).hexdigest()


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="coreutils sha256sum not installed")
def test_manifest_is_accepted_by_sha256sum(bundle: Path) -> None:
    result = subprocess.run(
        ["sha256sum", "--check", "--strict", MANIFEST_NAME],
        cwd=bundle, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_intact_bundle_verifies(bundle: Path) -> None:
    check = verify_bundle(bundle)
    assert check.ok
    assert check.files == 5
    assert check.describe() == []
    code, out, err = run_main([str(bundle)])
    assert (code, out.strip(), err) == (0, "intact: 5 files", "")


def test_rewriting_the_manifest_is_idempotent(bundle: Path) -> None:
    before = (bundle / MANIFEST_NAME).read_bytes()
    write_manifest(bundle)
    assert (bundle / MANIFEST_NAME).read_bytes() == before


def test_one_changed_byte_is_named_and_fails(bundle: Path) -> None:
    target = bundle / "readiness.json"
    data = bytearray(target.read_bytes())
    data[10] ^= 0x01
    target.write_bytes(bytes(data))

    check = verify_bundle(bundle)
    assert not check.ok
    assert check.changed == ["readiness.json"]
    assert check.missing == [] and check.extra == []
    assert check.describe() == ["changed: readiness.json"]

    code, out, _ = run_main([str(bundle)])
    assert code == 1
    assert "changed: readiness.json" in out.splitlines()


def test_deleted_file_is_missing(bundle: Path) -> None:
    (bundle / "evidence" / "P1-002 drill report.txt").unlink()
    check = verify_bundle(bundle)
    assert check.missing == ["evidence/P1-002 drill report.txt"]
    assert check.changed == [] and check.extra == []
    code, out, _ = run_main([str(bundle)])
    assert code == 1
    assert "missing: evidence/P1-002 drill report.txt" in out


def test_added_file_is_extra(bundle: Path) -> None:
    (bundle / "evidence" / "planted.json").write_text("{}", encoding="utf-8")
    check = verify_bundle(bundle)
    assert check.extra == ["evidence/planted.json"]
    assert check.changed == [] and check.missing == []
    code, out, _ = run_main([str(bundle)])
    assert code == 1
    assert "extra: evidence/planted.json" in out


def test_missing_manifest_is_a_clear_error(bundle: Path) -> None:
    (bundle / MANIFEST_NAME).unlink()
    check = verify_bundle(bundle)
    assert not check.ok
    assert check.manifest_error is not None and MANIFEST_NAME in check.manifest_error
    code, out, err = run_main([str(bundle)])
    assert code == 1
    assert f"manifest: {MANIFEST_NAME} is missing" in out
    assert "Traceback" not in out + err


def test_malformed_manifest_names_the_line(bundle: Path) -> None:
    manifest = bundle / MANIFEST_NAME
    lines = manifest.read_text(encoding="utf-8").splitlines()
    lines[2] = "not a checksum line"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out, err = run_main([str(bundle)])
    assert code == 1
    assert f"{MANIFEST_NAME} line 3 is malformed" in out
    assert "Traceback" not in out + err


def test_manifest_cannot_point_outside_the_bundle(bundle: Path) -> None:
    outside = bundle.parent / "secret.txt"
    outside.write_text("x", encoding="utf-8")
    digest = hashlib.sha256(b"x").hexdigest()
    with (bundle / MANIFEST_NAME).open("a", encoding="utf-8") as fh:
        fh.write(f"{digest}  ../secret.txt\n")
    check = verify_bundle(bundle)
    assert not check.ok
    assert check.manifest_error is not None and "../secret.txt" in check.manifest_error


def test_directory_that_does_not_exist_is_a_usage_error(tmp_path: Path) -> None:
    code, out, err = run_main([str(tmp_path / "nope")])
    assert code == 4
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and "does not exist" in err


def test_missing_argument_is_a_usage_error() -> None:
    code, _, err = run_main([])
    assert code == 4
    assert err == ("opsready verify-bundle: the following arguments are required: DIR "
                   "(see `opsready verify-bundle --help`)\n")


def test_cli_verify_bundle_detects_one_changed_byte(bundle: Path) -> None:
    intact = subprocess.run(
        [str(OPSREADY), "verify-bundle", str(bundle)], capture_output=True, text=True, timeout=60
    )
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "intact: 5 files" in intact.stdout

    target = bundle / "index.html"
    data = bytearray(target.read_bytes())
    data[0] ^= 0x20
    target.write_bytes(bytes(data))
    tampered = subprocess.run(
        [str(OPSREADY), "verify-bundle", str(bundle)], capture_output=True, text=True, timeout=60
    )
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr
    assert "changed: index.html" in tampered.stdout



def test_a_real_run_writes_an_intact_bundle_that_detects_one_changed_byte(tmp_path: Path) -> None:
    checks = tmp_path / "checks"
    checks.mkdir()
    (checks / "test_p2_002_demo.py").write_text(
        "import pytest\n"
        "pytestmark = [pytest.mark.ticket('P2-002')]\n\n"
        "def test_holds():\n"
        "    '''A criterion that holds.'''\n",
        encoding="utf-8",
    )
    write_plan(checks / "test_p2_002_demo.py", {"test_holds": {"contacts": []}})
    env = tmp_path / "empty.yaml"
    env.write_text("", encoding="utf-8")
    out = tmp_path / "reports" / "run"
    result = subprocess.run(
        [str(OPSREADY), "verify", "--checks", str(checks), "--env", str(env), "--out", str(out),
         "--gate", "none", "-n", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    listed = [line.split("  ", 1)[1] for line in
              (out / MANIFEST_NAME).read_text(encoding="utf-8").splitlines()]
    assert {"index.html", "readiness.json", "junit.xml", "readiness.prom"} <= set(listed)
    assert verify_bundle(out).ok

    promtool = subprocess.run(["promtool", "check", "metrics"],
                              input=(out / "readiness.prom").read_text(encoding="utf-8"),
                              capture_output=True, text=True, timeout=60)
    assert promtool.returncode == 0, promtool.stdout + promtool.stderr

    target = out / "readiness.json"
    data = bytearray(target.read_bytes())
    data[-2] ^= 0x01
    target.write_bytes(bytes(data))
    code, text, _ = run_main([str(out)])
    assert code == 1
    assert "changed: readiness.json" in text
