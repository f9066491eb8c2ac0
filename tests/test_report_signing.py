"""Signed bundles: `opsready keygen`, the signature a run writes, `verify-bundle --public-key`,
and OpenSSH's own `ssh-keygen -Y verify` with `sha256sum --check` on the same bundle, the way
an auditor checks it without opsready."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, Project, child_env, opsready_command
from conftest import cli_in_process as cli
from opsready._errors import ConfigError
from opsready.report.manifest import MANIFEST_NAME, SIGNATURE_NAME, write_manifest
from opsready.report.signing import (
    KEY_FILE_VARIABLE,
    KEY_VARIABLE,
    NAMESPACE,
    PRINCIPAL,
    check_signature,
    generate_key_pair,
    load_public_key,
    sign_manifest,
    signing_key_from_environment,
)

pytest_plugins = ["pytester"]

# The auditor's tool: OpenSSH's ssh-keygen (openssh-client), on every CI runner.
SSH_KEYGEN = shutil.which("ssh-keygen") or "ssh-keygen"



@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public, _ = generate_key_pair(tmp_path / "keys" / "opsready-signing")
    return private, public


@pytest.fixture
def bundle(tmp_path: Path, keys: tuple[Path, Path]) -> Path:
    """A report directory as a run leaves it: files, the manifest, and its signature."""
    report = tmp_path / "20261201T032300Z-production"
    (report / "evidence" / "P1-002").mkdir(parents=True)
    (report / "readiness.json").write_text(json.dumps({"schema": "opsready.readiness/v1"}), encoding="utf-8")
    (report / "index.html").write_text("<html><body>8 of 11 done</body></html>\n", encoding="utf-8")
    (report / "junit.xml").write_text("<testsuites/>\n", encoding="utf-8")
    (report / "evidence" / "P1-002" / "drill-report.md").write_bytes(b"# Drill\nrestored 4 tables\n")
    write_manifest(report)
    key = signing_key_from_environment({KEY_FILE_VARIABLE: str(keys[0])})
    assert key is not None
    sign_manifest(report, key)
    return report


def allowed_signers(tmp_path: Path, public: Path) -> Path:
    """The file an auditor writes once: the principal, the namespace, and the public key."""
    key_type, key_b64 = public.read_text(encoding="ascii").split()[:2]
    path = tmp_path / "allowed_signers"
    path.write_text(f'{PRINCIPAL} namespaces="{NAMESPACE}" {key_type} {key_b64}\n', encoding="ascii")
    return path


def ssh_verify(bundle: Path, signers: Path) -> subprocess.CompletedProcess[str]:
    with (bundle / MANIFEST_NAME).open("rb") as manifest:
        return subprocess.run(
            [SSH_KEYGEN, "-Y", "verify", "-f", str(signers), "-I", PRINCIPAL, "-n", NAMESPACE,
             "-s", str(bundle / SIGNATURE_NAME)],
            stdin=manifest, capture_output=True, text=True, timeout=60, check=False,
        )


def sha256sum_check(bundle: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sha256sum", "--check", "--strict", MANIFEST_NAME], cwd=bundle,
                          capture_output=True, text=True, timeout=60, check=False)


def flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


# -- keygen ---------------------------------------------------------------------------------


def test_keygen_writes_a_private_key_only_its_owner_reads_and_an_openssh_public_key(tmp_path: Path) -> None:
    target = tmp_path / "sign" / "opsready-signing"
    code, out, err = cli("keygen", str(target))
    assert (code, err) == (0, "")
    assert target.stat().st_mode & 0o777 == 0o600
    assert target.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    public = target.with_name("opsready-signing.pub").read_text()
    assert public.startswith("ssh-ed25519 ")
    fingerprint = next(line.split()[-1] for line in out.splitlines() if line.startswith("fingerprint:"))
    assert fingerprint == signing_key_from_environment({KEY_FILE_VARIABLE: str(target)}).fingerprint  # type: ignore[union-attr]
    assert target.read_text() not in out  # the secret half is never printed
    # A second keygen to the same path refuses rather than destroy a key in use.
    again, _, err = cli("keygen", str(target))
    assert again == 4 and "exists already" in err
    # Under a file: one line that names it, no traceback.
    blocked, _, err = cli("keygen", str(target / "nested"))
    assert blocked == 4 and err.strip() == (f"opsready keygen: {target / 'nested'}: cannot be written: {target} is "
                                            "a file, not a directory; choose a path in a directory this user can write")


def test_the_fingerprint_is_the_one_ssh_keygen_prints(keys: tuple[Path, Path]) -> None:
    listed = subprocess.run([SSH_KEYGEN, "-l", "-f", str(keys[1])], capture_output=True, text=True,
                            timeout=30, check=True).stdout.split()[1]
    assert listed == signing_key_from_environment({KEY_FILE_VARIABLE: str(keys[0])}).fingerprint  # type: ignore[union-attr]


# -- the standard tools, on a real bundle ---------------------------------------------------


def test_ssh_keygen_and_sha256sum_accept_an_intact_signed_bundle(bundle: Path, keys: tuple[Path, Path],
                                                                 tmp_path: Path) -> None:
    signers = allowed_signers(tmp_path, keys[1])
    result = ssh_verify(bundle, signers)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f'Good "{NAMESPACE}" signature for {PRINCIPAL} with ED25519 key' in result.stdout + result.stderr
    assert sha256sum_check(bundle).returncode == 0
    code, out, _ = cli("verify-bundle", str(bundle), "--public-key", str(keys[1]))
    assert code == 0 and out.startswith("intact: 4 files; signature: good, key SHA256:"), out


@pytest.mark.parametrize("name", ["readiness.json", "index.html", "junit.xml", "evidence/P1-002/drill-report.md"])
def test_one_changed_byte_in_any_file_is_rejected(bundle: Path, keys: tuple[Path, Path], tmp_path: Path,
                                                  name: str) -> None:
    flip_one_byte(bundle / name)
    # The signature still covers the unchanged manifest; the manifest no longer matches the file.
    assert ssh_verify(bundle, allowed_signers(tmp_path, keys[1])).returncode == 0
    checked = sha256sum_check(bundle)
    assert checked.returncode != 0
    assert f"{name}: FAILED" in checked.stdout
    code, out, _ = cli("verify-bundle", str(bundle), "--public-key", str(keys[1]))
    assert code == 1
    assert f"changed: {name}" in out.splitlines()
    assert out.splitlines()[-1] == "not intact: 1 changed"


def test_a_regenerated_manifest_is_rejected(bundle: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    """Whoever edits a file and writes a fresh manifest still cannot make the signature fit."""
    flip_one_byte(bundle / "readiness.json")
    write_manifest(bundle)
    assert sha256sum_check(bundle).returncode == 0  # the hashes alone are fooled
    result = ssh_verify(bundle, allowed_signers(tmp_path, keys[1]))
    assert result.returncode != 0
    assert "Signature verification failed" in result.stdout + result.stderr
    code, out, _ = cli("verify-bundle", str(bundle), "--public-key", str(keys[1]))
    assert code == 1
    assert out.splitlines()[0] == (f"signature: {SIGNATURE_NAME} does not verify: {MANIFEST_NAME} was changed "
                                   f"or re-generated after it was signed")
    assert out.splitlines()[-1] == "not intact: signature"


def test_a_bundle_re_signed_with_another_key_is_rejected(bundle: Path, keys: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    other, _, other_fp = generate_key_pair(tmp_path / "other" / "key")
    sign_manifest(bundle, signing_key_from_environment({KEY_FILE_VARIABLE: str(other)}))  # type: ignore[arg-type]
    result = ssh_verify(bundle, allowed_signers(tmp_path, keys[1]))
    assert result.returncode != 0
    code, out, _ = cli("verify-bundle", str(bundle), "--public-key", str(keys[1]))
    assert code == 1
    assert f"was made with key {other_fp}, not with the given key" in out


def test_missing_or_extra_signature_files(bundle: Path, keys: tuple[Path, Path]) -> None:
    (bundle / SIGNATURE_NAME).unlink()
    code, out, _ = cli("verify-bundle", str(bundle), "--public-key", str(keys[1]))
    assert code == 1
    assert f"signature: {SIGNATURE_NAME} is missing: the bundle is not signed" in out
    # The hashes alone still verify, and say a signature can be checked when one is there.
    assert cli("verify-bundle", str(bundle))[0] == 0
    (bundle / "planted.txt").write_text("x")
    code, out, _ = cli("verify-bundle", str(bundle), "--public-key", str(keys[1]))
    assert code == 1 and "extra: planted.txt" in out


def test_a_signed_bundle_without_a_key_says_the_signature_was_not_checked(bundle: Path) -> None:
    code, out, _ = cli("verify-bundle", str(bundle))
    assert code == 0
    assert f"signature: {SIGNATURE_NAME} present, not checked; pass --public-key FILE to check it" in out


def test_a_garbled_signature_is_named(bundle: Path, keys: tuple[Path, Path]) -> None:
    (bundle / SIGNATURE_NAME).write_text("-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n")
    check = check_signature(bundle, load_public_key(keys[1]))
    assert not check.ok
    assert check.problem is not None and "cannot be read as an SSH signature" in check.problem


def test_a_bad_public_key_file_is_a_usage_error(bundle: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pub"
    bad.write_text("ssh-rsa AAAAB3Nza not-ed25519\n")
    code, _, err = cli("verify-bundle", str(bundle), "--public-key", str(bad))
    assert code == 4 and "holds no ssh-ed25519 public key" in err


# -- where the key comes from ---------------------------------------------------------------


def test_the_key_comes_from_the_variable_or_the_file_never_both(keys: tuple[Path, Path]) -> None:
    text = keys[0].read_text()
    assert signing_key_from_environment({}) is None
    from_text = signing_key_from_environment({KEY_VARIABLE: text})
    from_file = signing_key_from_environment({KEY_FILE_VARIABLE: str(keys[0])})
    assert from_text is not None and from_file is not None
    assert from_text.fingerprint == from_file.fingerprint
    with pytest.raises(ConfigError, match="both set"):
        signing_key_from_environment({KEY_VARIABLE: text, KEY_FILE_VARIABLE: str(keys[0])})


@pytest.mark.parametrize("value", [
    "-----BEGIN OPENSSH PRIVATE KEY-----\nQ0FOQVJZLW5vdC1hLWtleQ==\n-----END OPENSSH PRIVATE KEY-----",
    "CANARY-signing-key-text",
])
def test_an_unusable_key_is_a_config_error_that_never_prints_it(value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        signing_key_from_environment({KEY_VARIABLE: value})
    assert "CANARY" not in str(raised.value) and "Q0FOQVJZ" not in str(raised.value)
    assert str(raised.value).startswith(f"{KEY_VARIABLE}: is not a readable private key")


def test_an_rsa_key_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(ConfigError, match="bundles are signed with Ed25519"):
        signing_key_from_environment({KEY_VARIABLE: pem.decode()})


def test_a_run_with_an_unusable_key_stops_before_any_probe(tmp_path: Path) -> None:
    checks = tmp_path / "checks"
    checks.mkdir()
    (checks / "test_p2_002_x.py").write_text(
        "import pytest\npytestmark = [pytest.mark.ticket('P2-002')]\n"
        "def test_a():\n    '''a'''\n    raise SystemExit('a probe ran')\n")
    env = tmp_path / "env.yaml"
    env.write_text("")
    proc = subprocess.run([*opsready_command(), "verify", "--checks", str(checks), "--env", str(env),
                           "--out", str(tmp_path / "out"), "-n", "0"],
                          env={**child_env(), KEY_FILE_VARIABLE: str(tmp_path / "absent")}, cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"opsready: config error: {KEY_FILE_VARIABLE}={tmp_path / 'absent'}: cannot be read "
        f"(No such file or directory); point it at the private key `opsready keygen` wrote"]
    assert not (tmp_path / "out" / "readiness.json").exists()


# -- a real run ------------------------------------------------------------------------------


def test_a_run_signs_its_bundle_and_shows_the_fingerprint(pytester: pytest.Pytester, keys: tuple[Path, Path],
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = Project(pytester)
    project.check("test_p2_002_x.py", "import pytest\npytestmark = [pytest.mark.ticket('P2-002')]\n"
                  "def test_a():\n    '''It holds'''\n")
    monkeypatch.setenv(KEY_VARIABLE, keys[0].read_text())
    _, data = project.run("--opsready-gate", "none", out="signed")
    fingerprint = signing_key_from_environment({KEY_FILE_VARIABLE: str(keys[0])}).fingerprint  # type: ignore[union-attr]
    assert data["run"]["signing_key"] == fingerprint
    report = project.root / "reports" / "signed"
    assert f"<code>{fingerprint}</code>" in (report / "index.html").read_text()
    assert ssh_verify(report, allowed_signers(tmp_path, keys[1])).returncode == 0
    assert sha256sum_check(report).returncode == 0
    assert cli("verify-bundle", str(report), "--public-key", str(keys[1]))[0] == 0
    # Nothing of the private key reaches the bundle.
    secret_line = keys[0].read_text().splitlines()[1]
    for path in report.rglob("*"):
        if path.is_file():
            assert secret_line not in path.read_text(errors="replace"), path


def test_an_unsigned_run_says_so(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    monkeypatch.delenv(KEY_FILE_VARIABLE, raising=False)
    project = Project(pytester)
    project.check("test_p2_002_x.py", "import pytest\npytestmark = [pytest.mark.ticket('P2-002')]\n"
                  "def test_a():\n    '''It holds'''\n")
    _, data = project.run("--opsready-gate", "none", out="plain")
    assert data["run"]["signing_key"] is None
    report = project.root / "reports" / "plain"
    assert not (report / SIGNATURE_NAME).exists()
    assert "not signed: no signing key was configured" in (report / "index.html").read_text()
