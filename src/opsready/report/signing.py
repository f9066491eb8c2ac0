"""Signed bundles: an Ed25519 signature over ``MANIFEST.sha256``, in OpenSSH's SSHSIG format.

The manifest alone shows that the files are the ones it lists, but whoever can edit a file can
also re-generate the manifest. A detached signature made with a key the auditor knows closes
that gap: ``MANIFEST.sha256.sig`` signs the manifest's exact bytes, and the manifest covers
every other file. An auditor checks both with tools they already have, without opsready::

    ssh-keygen -Y verify -f allowed_signers -I opsready -n opsready-manifest \\
        -s MANIFEST.sha256.sig < MANIFEST.sha256
    sha256sum --check --strict MANIFEST.sha256

The key operations (generating, signing, verifying, reading and writing OpenSSH keys) are
the ``cryptography`` package's. This module only lays out the SSHSIG envelope
(OpenSSH ``PROTOCOL.sshsig``): the signed blob and its ASCII armour.

The signing key never comes from the environment YAML: it is read from
``OPSREADY_SIGNING_KEY`` (the private key's text, e.g. a CI secret) or from the file named by
``OPSREADY_SIGNING_KEY_FILE``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from opsready._errors import ConfigError
from opsready._options import ExitCode
from opsready.report.files import file_in_the_way
from opsready.report.manifest import MANIFEST_NAME, SIGNATURE_NAME, verify_bundle

__all__ = [
    "KEY_FILE_VARIABLE",
    "KEY_VARIABLE",
    "NAMESPACE",
    "PRINCIPAL",
    "SignatureCheck",
    "SigningKey",
    "check_signature",
    "fingerprint",
    "generate_key_pair",
    "keygen_command",
    "load_public_key",
    "sign_manifest",
    "signing_key_from_environment",
    "verify_bundle_command",
]

KEY_VARIABLE = "OPSREADY_SIGNING_KEY"
KEY_FILE_VARIABLE = "OPSREADY_SIGNING_KEY_FILE"
# The SSHSIG namespace keeps a bundle signature from being accepted as any other kind of
# signature made with the same key (a git commit, a file signed with -n file).
NAMESPACE = "opsready-manifest"
# The identity an auditor's allowed_signers file names the key by.
PRINCIPAL = "opsready"

_MAGIC = b"SSHSIG"
_VERSION = 1
_HASH = "sha512"
_KEY_TYPE = "ssh-ed25519"
_ARMOUR_BEGIN = "-----BEGIN SSH SIGNATURE-----"
_ARMOUR_END = "-----END SSH SIGNATURE-----"
_ARMOUR_WIDTH = 70  # ssh-keygen wraps the base64 at 70 columns


def _string(data: bytes) -> bytes:
    """An SSH wire ``string``: a uint32 length, then the bytes (RFC 4251 §5)."""
    return struct.pack(">I", len(data)) + data


class _Reader:
    """Reads SSH wire fields; every read past the end raises ``ValueError``."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def raw(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise ValueError("truncated")
        chunk = self.data[self.at:self.at + n]
        self.at += n
        return chunk

    def uint32(self) -> int:
        value: int = struct.unpack(">I", self.raw(4))[0]
        return value

    def string(self) -> bytes:
        return self.raw(self.uint32())

    def done(self) -> bool:
        return self.at == len(self.data)


def _public_blob(key: Ed25519PublicKey) -> bytes:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _string(_KEY_TYPE.encode()) + _string(raw)


def fingerprint(key: Ed25519PublicKey) -> str:
    """The key's fingerprint as ``ssh-keygen -l`` prints it: ``SHA256:<base64, no padding>``."""
    digest = hashlib.sha256(_public_blob(key)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _signed_data(message: bytes) -> bytes:
    """What the key signs (PROTOCOL.sshsig): the preamble, the namespace, an empty reserved
    field, the hash algorithm and the hash of the message."""
    return (_MAGIC + _string(NAMESPACE.encode()) + _string(b"") + _string(_HASH.encode())
            + _string(hashlib.sha512(message).digest()))


@dataclass(frozen=True)
class SigningKey:
    """The private key a run signs its manifest with, and where it came from (never its value)."""

    private: Ed25519PrivateKey
    source: str

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public)

    def sign(self, message: bytes) -> str:
        """An armoured SSHSIG signature of ``message``, as ``ssh-keygen -Y sign`` writes it."""
        signature = self.private.sign(_signed_data(message))
        blob = (_MAGIC + struct.pack(">I", _VERSION) + _string(_public_blob(self.public))
                + _string(NAMESPACE.encode()) + _string(b"") + _string(_HASH.encode())
                + _string(_string(_KEY_TYPE.encode()) + _string(signature)))
        text = base64.b64encode(blob).decode()
        lines = [text[i:i + _ARMOUR_WIDTH] for i in range(0, len(text), _ARMOUR_WIDTH)]
        return "\n".join([_ARMOUR_BEGIN, *lines, _ARMOUR_END]) + "\n"


def _load_private(data: bytes, source: str) -> SigningKey:
    fix = "run `opsready keygen PATH` and give it the private key PATH writes"
    if b"ENCRYPTED" in data or b"bcrypt" in data:
        raise ConfigError(source, "", "the signing key is protected by a passphrase, which an unattended "
                          "run cannot type", "keep an unencrypted key in a secret store instead")
    key: object
    try:
        if data.lstrip().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----"):
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # The message never includes the key's text: it is a secret.
        raise ConfigError(source, "", "is not a readable private key (OpenSSH or PKCS#8 PEM)", fix) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(source, "", f"is a {type(key).__name__.removesuffix('PrivateKey').lstrip('_')} key; "
                          "bundles are signed with Ed25519", fix)
    return SigningKey(key, source)


def signing_key_from_environment(environ: Mapping[str, str] | None = None) -> SigningKey | None:
    """The signing key named by ``OPSREADY_SIGNING_KEY`` or ``OPSREADY_SIGNING_KEY_FILE``, or
    None when neither is set. Raises ``ConfigError`` when the key cannot be used."""
    env = os.environ if environ is None else environ
    text = env.get(KEY_VARIABLE, "").strip()
    path = env.get(KEY_FILE_VARIABLE, "").strip()
    if text and path:
        raise ConfigError(KEY_VARIABLE, "", f"and {KEY_FILE_VARIABLE} are both set",
                          "set one of them: the key's text, or the path of its file")
    if text:
        return _load_private(text.encode() + b"\n", KEY_VARIABLE)
    if path:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"{KEY_FILE_VARIABLE}={path}", "", f"cannot be read ({exc.strerror or exc})",
                              "point it at the private key `opsready keygen` wrote") from None
        return _load_private(data, f"{KEY_FILE_VARIABLE}={path}")
    return None


def sign_manifest(report_dir: Path, key: SigningKey) -> Path:
    """Write ``MANIFEST.sha256.sig`` next to the manifest: the signature of its exact bytes."""
    message = (report_dir / MANIFEST_NAME).read_bytes()
    target = report_dir / SIGNATURE_NAME
    tmp = report_dir / f".{SIGNATURE_NAME}.tmp"
    tmp.write_text(key.sign(message), encoding="ascii", newline="\n")
    tmp.replace(target)
    return target


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from an OpenSSH ``.pub`` file (``ssh-ed25519 AAAA... comment``) or
    from an allowed_signers line. Raises ``ConfigError``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), "", f"cannot be read ({type(exc).__name__})",
                          "pass the .pub file `opsready keygen` wrote") from None
    for line in text.splitlines():
        fields = line.split()
        if _KEY_TYPE in fields:
            at = fields.index(_KEY_TYPE)
            try:
                key = serialization.load_ssh_public_key(" ".join(fields[at:at + 2]).encode())
            except (ValueError, UnsupportedAlgorithm):
                break
            if isinstance(key, Ed25519PublicKey):
                return key
    raise ConfigError(str(path), "", "holds no ssh-ed25519 public key",
                      "pass the .pub file `opsready keygen` wrote (one line starting with ssh-ed25519)")


@dataclass(frozen=True)
class SignatureCheck:
    """The verdict on ``MANIFEST.sha256.sig``: ``problem`` is None when it verifies."""

    problem: str | None
    signed_by: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _parse_armour(text: str) -> bytes:
    lines = [ln.strip() for ln in text.strip().splitlines()]
    if len(lines) < 3 or lines[0] != _ARMOUR_BEGIN or lines[-1] != _ARMOUR_END:
        raise ValueError("not an armoured SSH signature")
    return base64.b64decode("".join(lines[1:-1]), validate=True)


def check_signature(report_dir: Path, public_key: Ed25519PublicKey) -> SignatureCheck:
    """Verify ``MANIFEST.sha256.sig`` against the manifest's bytes and the given public key."""
    sig_path, manifest = report_dir / SIGNATURE_NAME, report_dir / MANIFEST_NAME
    expected = fingerprint(public_key)
    if not sig_path.is_file():
        return SignatureCheck(f"{SIGNATURE_NAME} is missing: the bundle is not signed")
    if not manifest.is_file():
        return SignatureCheck(f"{MANIFEST_NAME} is missing, so there is nothing the signature covers")
    try:
        reader = _Reader(_parse_armour(sig_path.read_text(encoding="ascii")))
        if reader.raw(6) != _MAGIC or reader.uint32() != _VERSION:
            raise ValueError("not an SSHSIG version 1 signature")
        signer_blob, namespace, _reserved, hash_alg, sig_blob = (reader.string() for _ in range(5))
        if not reader.done():
            raise ValueError("trailing bytes")
        key_reader = _Reader(signer_blob)
        if key_reader.string() != _KEY_TYPE.encode():
            raise ValueError("not an Ed25519 signature")
        signer = Ed25519PublicKey.from_public_bytes(key_reader.string())
        sig_reader = _Reader(sig_blob)
        if sig_reader.string() != _KEY_TYPE.encode():
            raise ValueError("not an Ed25519 signature")
        signature = sig_reader.string()
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        return SignatureCheck(f"{SIGNATURE_NAME} cannot be read as an SSH signature ({exc})")
    signed_by = fingerprint(signer)
    if signed_by != expected:
        return SignatureCheck(f"{SIGNATURE_NAME} was made with key {signed_by}, not with the given key "
                              f"{expected}", signed_by)
    if namespace != NAMESPACE.encode() or hash_alg != _HASH.encode():
        return SignatureCheck(f"{SIGNATURE_NAME} is for namespace {namespace.decode(errors='replace')!r} "
                              f"with {hash_alg.decode(errors='replace')}, expected {NAMESPACE!r} with {_HASH}",
                              signed_by)
    message = manifest.read_bytes()
    try:
        public_key.verify(signature, _signed_data(message))
    except InvalidSignature:
        return SignatureCheck(f"{SIGNATURE_NAME} does not verify: {MANIFEST_NAME} was changed or "
                              f"re-generated after it was signed", signed_by)
    return SignatureCheck(None, signed_by)


def verify_bundle_command(report_dir: Path, public_key_path: Path | None, *,
                          stdout: TextIO | None = None, stderr: TextIO | None = None) -> ExitCode:
    """``opsready verify-bundle DIR [--public-key FILE]``: the signature first (when a key is
    given), then every hash. Exit 0 when both hold, 1 naming what failed, 4 on a usage error."""
    from opsready.report.manifest import verify_bundle_command as hashes_command

    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    if public_key_path is None:
        code = hashes_command(report_dir, stdout=out, stderr=err)
        if report_dir.is_dir() and (report_dir / SIGNATURE_NAME).is_file():
            print(f"signature: {SIGNATURE_NAME} present, not checked; pass --public-key FILE to check it",
                  file=out)
        return code
    if not report_dir.is_dir():
        return hashes_command(report_dir, stdout=out, stderr=err)
    try:
        key = load_public_key(public_key_path)
    except ConfigError as exc:
        print(f"opsready verify-bundle: --public-key {exc}", file=err)
        return ExitCode.USAGE
    signature = check_signature(report_dir, key)
    hashes = verify_bundle(report_dir)
    if signature.ok and hashes.ok:
        print(f"intact: {hashes.files} files; signature: good, key {signature.signed_by}", file=out)
        return ExitCode.OK
    if not signature.ok:
        print(f"signature: {signature.problem}", file=out)
    for line in hashes.describe():
        print(line, file=out)
    what = [] if signature.ok else ["signature"]
    if hashes.manifest_error is None:
        what += [f"{len(v)} {k}" for k, v in
                 (("changed", hashes.changed), ("missing", hashes.missing), ("extra", hashes.extra)) if v]
    else:
        what.append("manifest")
    print(f"not intact: {', '.join(what)}", file=out)
    return ExitCode.FAILED


def generate_key_pair(path: Path, comment: str = PRINCIPAL) -> tuple[Path, Path, str]:
    """Write an Ed25519 private key to ``path`` (mode 0600, OpenSSH format) and its public key
    to ``path.pub``. Refuses to overwrite either. Returns both paths and the fingerprint."""
    pub = path.with_name(path.name + ".pub")
    for existing in (path, pub):
        if existing.exists():
            raise ConfigError(str(existing), "", "exists already",
                              "choose another path, or remove the old key on purpose")
    key = Ed25519PrivateKey.generate()
    private_text = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                     serialization.NoEncryption())
    public_text = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                serialization.PublicFormat.OpenSSH)
    blocking = file_in_the_way(path)
    if blocking is not None:
        raise ConfigError(str(path), "", f"cannot be written: {blocking} is a file, not a directory",
                          "choose a path in a directory this user can write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(private_text)
        pub.write_text(f"{public_text.decode()} {comment}\n", encoding="ascii")
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot be written ({exc.strerror or type(exc).__name__})",
                          "choose a path in a directory this user can write") from None
    return path, pub, fingerprint(key.public_key())


def keygen_command(path: Path, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> ExitCode:
    """``opsready keygen PATH``: write a key pair and say how to use both halves."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    try:
        private, public, fp = generate_key_pair(path)
    except ConfigError as exc:
        print(f"opsready keygen: {exc}", file=err)
        return ExitCode.USAGE
    key_line = public.read_text(encoding="ascii").split()
    print(f"private key: {private} (keep it secret: store it as the CI secret {KEY_VARIABLE}, or point "
          f"{KEY_FILE_VARIABLE} at it)", file=out)
    print(f"public key:  {public} (give it to auditors)", file=out)
    print(f"fingerprint: {fp}", file=out)
    print(f'allowed_signers line for ssh-keygen -Y verify: {PRINCIPAL} namespaces="{NAMESPACE}" '
          f"{key_line[0]} {key_line[1]}", file=out)
    return ExitCode.OK
