"""Signed SLSA v1 build provenance: in-toto Statement v1 wrapped in a DSSE envelope.

The build stage calls `build_statement` + `sign` (the private key comes from an
environment variable so it never touches the repo or the Dagster event log); the
deploy stage calls `verify` and refuses to deploy unless the envelope is signed by
the pinned public key *and* names the exact artifact digest and commit it is about
to ship.

Signing and PAE are done by securesystemslib (`dsse.Envelope`, `CryptoSigner`,
`SSlibKey`); the predicate is checked against the official SLSA provenance v1
protobuf schema from `in-toto-attestation`, so a misspelt field or a timestamp
without a timezone is rejected before anything is signed.

CLI::

    python -m sevenp_pipeline.scanners.provenance keygen --out DIR
    python -m sevenp_pipeline.scanners.provenance verify ENVELOPE.json \\
        --public-key PUB.pem --digest sha256:<hex> [--commit SHA] [--builder-id ID]
"""

from __future__ import annotations

import argparse
import binascii
import copy
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)
from google.protobuf import json_format
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement as _AttestationStatement
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import UnverifiedSignatureError, VerificationError
from securesystemslib.signer import CryptoSigner, SSlibKey

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
DEFAULT_KEY_ENV = "SEVENP_SIGNING_KEY"
PRIVATE_KEY_FILENAME = "signing-key.pem"
PUBLIC_KEY_FILENAME = "signing-key.pub.pem"

KeyAlgorithm = Literal["ed25519", "ecdsa-p256"]
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_HEX40 = re.compile(r"[0-9a-fA-F]{40}")
_DIGEST_VALUE = re.compile(r"[0-9a-fA-F]+")


class ProvenanceError(Exception):
    """Bad input to building or signing provenance (never carries key material)."""


class ProvenanceVerificationError(ProvenanceError):
    """The envelope must not be trusted; the message says exactly why."""


# --------------------------------------------------------------------------- helpers


def canonical_json(obj: Any) -> bytes:
    """Serialise deterministically so the same statement always yields the same signed bytes."""
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode(
            "utf-8"
        )
    except (TypeError, ValueError) as exc:
        raise ProvenanceError(f"statement is not JSON-serialisable: {exc}") from None


def normalize_sha256(value: str, *, field: str = "digest") -> str:
    """Return the lowercase 64-hex part of ``sha256:<hex>`` or ``<hex>``; reject anything else."""
    if not isinstance(value, str):
        raise ProvenanceError(f"{field} must be a string like 'sha256:<64 hex>', got {type(value).__name__}")
    hex_part = value.removeprefix("sha256:")
    if not _HEX64.fullmatch(hex_part):
        raise ProvenanceError(f"{field} must be 'sha256:<64 hex chars>' or 64 hex chars, got {value!r}")
    return hex_part.lower()


def normalize_commit(value: str, *, field: str = "commit_sha") -> str:
    """Return the lowercase full 40-hex git SHA; abbreviated SHAs are ambiguous so they are rejected."""
    if not isinstance(value, str) or not _HEX40.fullmatch(value):
        raise ProvenanceError(f"{field} must be a full 40-hex git commit SHA, got {value!r}")
    return value.lower()


def _require_str(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ProvenanceError(f"{field} must be a non-empty string, got {value!r}")
    return value


def _rfc3339(value: datetime | str, field: str) -> str:
    """Render a timezone-aware instant as RFC 3339 UTC ('...Z'), the form SLSA and protobuf expect."""
    if isinstance(value, str):
        text = value.strip()
        try:
            # Python 3.10's fromisoformat does not accept a trailing 'Z'.
            parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            raise ProvenanceError(f"{field} is not an ISO 8601 / RFC 3339 timestamp: {value!r}") from None
    elif isinstance(value, datetime):
        parsed = value
    else:
        raise ProvenanceError(f"{field} must be a datetime or RFC 3339 string, got {type(value).__name__}")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ProvenanceError(f"{field} must be timezone-aware (a naive time is ambiguous): {value!r}")
    return parsed.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _repo_uri(repository_uri: str) -> str:
    """Normalise a repo location to a URI; local absolute paths (test remotes, mirrors) become file:// URIs."""
    uri = _require_str(repository_uri, "repository_uri").strip()
    if uri.startswith("/"):
        uri = Path(uri).as_uri()
    return uri.removeprefix("git+")


def _resource_descriptor(item: Mapping[str, Any], field: str) -> dict[str, Any]:
    """Check a ResourceDescriptor dict: name/uri/digest present, digests hex, sha256 exactly 64 hex."""
    if not isinstance(item, Mapping):
        raise ProvenanceError(f"{field} must be a ResourceDescriptor dict, got {type(item).__name__}")
    rd = dict(item)
    if not (rd.get("name") or rd.get("uri") or rd.get("digest")):
        raise ProvenanceError(f"{field} needs at least one of name, uri or digest")
    digest = rd.get("digest")
    if digest is not None:
        if not isinstance(digest, Mapping) or not digest:
            raise ProvenanceError(f"{field}.digest must be a non-empty {{algorithm: hex}} mapping")
        clean: dict[str, str] = {}
        for algo, val in digest.items():
            if algo == "sha256":
                clean[algo] = normalize_sha256(val, field=f"{field}.digest.sha256")
            elif isinstance(val, str) and _DIGEST_VALUE.fullmatch(val):
                clean[algo] = val.lower()
            else:
                raise ProvenanceError(f"{field}.digest.{algo} must be a hex string, got {val!r}")
        rd["digest"] = clean
    return rd


def resource_descriptor(
    name: str, digest: str, *, uri: str | None = None, media_type: str | None = None
) -> dict[str, Any]:
    """Build a byproduct entry (e.g. the SBOM) from a ``sha256:`` digest, so callers need not know the shape."""
    rd: dict[str, Any] = {"name": _require_str(name, "name"), "digest": {"sha256": normalize_sha256(digest)}}
    if uri:
        rd["uri"] = uri
    if media_type:
        rd["mediaType"] = media_type
    return rd


def validate_statement(statement: Mapping[str, Any]) -> None:
    """Check a statement against the in-toto v1 and SLSA provenance v1 schemas (official protobufs).

    Raises ProvenanceError naming the first problem found.
    """
    if not isinstance(statement, Mapping):
        raise ProvenanceError(f"statement must be a JSON object, got {type(statement).__name__}")
    if statement.get("_type") != STATEMENT_TYPE:
        raise ProvenanceError(f"statement _type {statement.get('_type')!r} != {STATEMENT_TYPE!r}")
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise ProvenanceError(f"predicateType {statement.get('predicateType')!r} != {PREDICATE_TYPE!r}")
    try:
        stmt_pb = json_format.ParseDict(statement, statement_pb2.Statement())
        _AttestationStatement.copy_from_pb(stmt_pb).validate()
        prov = json_format.ParseDict(statement["predicate"], provenance_pb2.Provenance())
    except (json_format.ParseError, ValueError, KeyError) as exc:
        raise ProvenanceError(f"statement does not match the in-toto/SLSA v1 schema: {exc}") from None
    if not prov.build_definition.build_type:
        raise ProvenanceError("predicate.buildDefinition.buildType is required")
    if not prov.run_details.builder.id:
        raise ProvenanceError("predicate.runDetails.builder.id is required")
    for i, subject in enumerate(statement["subject"]):
        for algo, val in subject["digest"].items():
            if algo == "sha256":
                normalize_sha256(val, field=f"subject[{i}].digest.sha256")


# --------------------------------------------------------------------------- statement


def build_statement(
    *,
    subject_name: str,
    subject_digest: str,
    repository_uri: str,
    commit_sha: str,
    builder_id: str,
    build_type: str,
    external_parameters: Mapping[str, Any],
    internal_parameters: Mapping[str, Any],
    byproducts: Sequence[Mapping[str, Any]],
    started_at: datetime | str,
    finished_at: datetime | str,
    invocation_id: str,
    ref: str | None = None,
) -> dict[str, Any]:
    """Assemble an in-toto Statement v1 with a SLSA Provenance v1 predicate, validating every input.

    The source checkout goes in ``resolvedDependencies`` (an input the build consumed);
    the SBOM belongs in ``byproducts`` (something the build produced about the artifact that
    is not the artifact itself), which is what the SLSA v1 spec says each field is for.
    ``ref`` (e.g. ``refs/heads/main``) defaults to the commit SHA for the ``git+<repo>@<ref>`` URI.
    """
    name = _require_str(subject_name, "subject_name")
    digest = normalize_sha256(subject_digest, field="subject_digest")
    commit = normalize_commit(commit_sha)
    repo = _repo_uri(repository_uri)
    git_ref = _require_str(ref, "ref") if ref is not None else commit
    for field, params in (("external_parameters", external_parameters), ("internal_parameters", internal_parameters)):
        if not isinstance(params, Mapping):
            raise ProvenanceError(f"{field} must be a dict, got {type(params).__name__}")
    if isinstance(byproducts, (str, bytes)) or not isinstance(byproducts, Sequence):
        raise ProvenanceError(f"byproducts must be a list of ResourceDescriptor dicts, got {type(byproducts).__name__}")
    started_on = _rfc3339(started_at, "started_at")
    finished_on = _rfc3339(finished_at, "finished_at")
    if _parse_utc(finished_on) < _parse_utc(started_on):
        raise ProvenanceError(f"finished_at {finished_on} is before started_at {started_on}")

    statement: dict[str, Any] = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": digest}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": _require_str(build_type, "build_type"),
                "externalParameters": copy.deepcopy(dict(external_parameters)),
                "internalParameters": copy.deepcopy(dict(internal_parameters)),
                "resolvedDependencies": [{"uri": f"git+{repo}@{git_ref}", "digest": {"gitCommit": commit}}],
            },
            "runDetails": {
                "builder": {"id": _require_str(builder_id, "builder_id")},
                "metadata": {
                    "invocationId": _require_str(invocation_id, "invocation_id"),
                    "startedOn": started_on,
                    "finishedOn": finished_on,
                },
                "byproducts": [_resource_descriptor(b, f"byproducts[{i}]") for i, b in enumerate(byproducts)],
            },
        },
    }
    canonical_json(statement)  # fail now, not at signing time, on non-JSON parameters
    validate_statement(statement)
    return statement


def _parse_utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --------------------------------------------------------------------------- keys


def generate_keypair(algorithm: KeyAlgorithm = "ed25519") -> tuple[str, str]:
    """Return ``(private_pem, public_pem)``: unencrypted PKCS#8 private key and SubjectPublicKeyInfo public key."""
    private_key: PrivateKey
    if algorithm == "ed25519":
        private_key = ed25519.Ed25519PrivateKey.generate()
    elif algorithm == "ecdsa-p256":
        private_key = ec.generate_private_key(ec.SECP256R1())
    else:
        raise ProvenanceError(f"unsupported key algorithm {algorithm!r} (use 'ed25519' or 'ecdsa-p256')")
    private_pem = private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode("ascii")
    return private_pem, _public_pem_of(private_key)


def _public_pem_of(private_key: PrivateKey) -> str:
    return private_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def _is_supported(key: object) -> bool:
    """Only Ed25519 and ECDSA P-256, so producers and the deploy gate agree on what is trusted."""
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return True
    return isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) and isinstance(
        key.curve, ec.SECP256R1
    )


def _private_key_from_env(key_env: str, env: Mapping[str, str]) -> PrivateKey:
    """Load the PEM private key from ``env[key_env]``; errors name the variable but never echo its value."""
    raw = env.get(key_env)
    if raw is None or not raw.strip():
        raise ProvenanceError(
            f"signing key environment variable {key_env} is not set or empty "
            f"(expected an unencrypted PEM Ed25519 or ECDSA P-256 private key)"
        )
    # Env files and CI secret stores often flatten newlines to a literal "\n".
    pem = raw.strip().replace("\\n", "\n").encode("utf-8")
    try:
        private_key = load_pem_private_key(pem, password=None)
    except TypeError:
        raise ProvenanceError(
            f"signing key in environment variable {key_env} is password-protected; provide an unencrypted PEM key"
        ) from None
    except Exception:  # any parse failure: do not chain, the cause may quote key bytes
        raise ProvenanceError(
            f"environment variable {key_env} does not hold a valid PEM private key "
            f"(expected an unencrypted PKCS#8 or traditional PEM Ed25519 / ECDSA P-256 key)"
        ) from None
    if isinstance(private_key, (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey)) and _is_supported(private_key):
        return private_key
    raise ProvenanceError(
        f"signing key in {key_env}: unsupported key type {type(private_key).__name__} (use Ed25519 or ECDSA P-256)"
    )


def public_key_pem(key_env: str = DEFAULT_KEY_ENV, env: Mapping[str, str] = os.environ) -> str:
    """Derive the public PEM from the private key in ``env[key_env]``, to publish the key the deploy gate pins."""
    return _public_pem_of(_private_key_from_env(key_env, env))


def _load_public_key(public_pem: str | bytes) -> SSlibKey:
    data = public_pem.encode("utf-8") if isinstance(public_pem, str) else public_pem
    try:
        key = load_pem_public_key(data)
    except Exception:
        raise ProvenanceVerificationError("public key is not a valid PEM SubjectPublicKeyInfo key") from None
    if not _is_supported(key):
        raise ProvenanceVerificationError(
            f"public key: unsupported key type {type(key).__name__} (use Ed25519 or ECDSA P-256)"
        )
    return SSlibKey.from_crypto(key)


def keyid_of(public_pem: str | bytes) -> str:
    """The securesystemslib key id (sha256 of the canonical key dict) that signatures are tagged with."""
    return _load_public_key(public_pem).keyid


# --------------------------------------------------------------------------- sign / verify


def sign(
    statement: Mapping[str, Any], *, key_env: str = DEFAULT_KEY_ENV, env: Mapping[str, str] = os.environ
) -> dict[str, Any]:
    """Wrap the statement in a DSSE envelope signed with the key from ``env[key_env]``.

    The statement is re-validated first so a malformed attestation is never signed.
    """
    validate_statement(statement)
    signer = CryptoSigner(_private_key_from_env(key_env, env))
    envelope = Envelope(payload=canonical_json(statement), payload_type=PAYLOAD_TYPE, signatures={})
    envelope.sign(signer)
    return envelope.to_dict()


def _parse_envelope(envelope: Mapping[str, Any] | str | bytes) -> Envelope:
    if isinstance(envelope, (str, bytes)):
        try:
            envelope = json.loads(envelope)
        except ValueError:
            raise ProvenanceVerificationError("envelope is not valid JSON") from None
    if not isinstance(envelope, Mapping):
        raise ProvenanceVerificationError(f"envelope must be a JSON object, got {type(envelope).__name__}")
    for field in ("payload", "payloadType", "signatures"):
        if field not in envelope:
            raise ProvenanceVerificationError(f"malformed envelope: missing field {field!r}")
    if not isinstance(envelope["signatures"], list) or not envelope["signatures"]:
        raise ProvenanceVerificationError("envelope has no signatures")
    try:
        # Envelope.from_dict rewrites the signature dicts in place; keep the caller's copy intact.
        return Envelope.from_dict(copy.deepcopy(dict(envelope)))
    except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
        raise ProvenanceVerificationError(f"malformed envelope: {type(exc).__name__}: {exc}") from None


def _check_signature(env: Envelope, key: SSlibKey) -> None:
    """Verify via securesystemslib (DSSE PAE), but turn its threshold error into a specific reason."""
    prefix = f"signature does not verify with key {key.keyid}"
    if key.keyid not in env.signatures:
        signed_by = ", ".join(sorted(env.signatures)) or "nobody"
        raise ProvenanceVerificationError(f"{prefix}: envelope has no signature by this key (signed by: {signed_by})")
    try:
        env.verify([key], threshold=1)
    except (VerificationError, UnverifiedSignatureError, ValueError):
        raise ProvenanceVerificationError(f"{prefix}: payload or signature was altered, or wrong key") from None


def verify(
    envelope: Mapping[str, Any] | str | bytes,
    *,
    public_key_pem: str | bytes,
    expected_subject_digest: str,
    expected_commit: str | None = None,
    expected_builder_id: str | None = None,
) -> dict[str, Any]:
    """Authenticate the envelope and check it vouches for exactly this artifact; return the statement.

    The signature is checked before the payload is parsed, so nothing untrusted is interpreted.
    Every failure raises ProvenanceVerificationError with the specific reason.
    """
    key = _load_public_key(public_key_pem)
    try:
        want_digest = normalize_sha256(expected_subject_digest, field="expected_subject_digest")
        want_commit = normalize_commit(expected_commit, field="expected_commit") if expected_commit else None
    except ProvenanceError as exc:
        raise ProvenanceVerificationError(str(exc)) from None

    env = _parse_envelope(envelope)
    _check_signature(env, key)

    if env.payload_type != PAYLOAD_TYPE:
        raise ProvenanceVerificationError(f"payloadType {env.payload_type!r} != expected {PAYLOAD_TYPE!r}")
    try:
        statement = json.loads(env.payload)
    except ValueError:
        raise ProvenanceVerificationError("payload is not valid JSON") from None
    try:
        validate_statement(statement)
    except ProvenanceError as exc:
        raise ProvenanceVerificationError(str(exc)) from None

    subject_digests = [s.get("digest", {}).get("sha256", "").lower() for s in statement["subject"]]
    if want_digest not in subject_digests:
        got = ", ".join(f"sha256:{d}" for d in subject_digests if d) or "(no sha256 subject)"
        raise ProvenanceVerificationError(f"subject digest {got} != expected sha256:{want_digest}")

    predicate = statement["predicate"]
    if want_commit is not None:
        deps = predicate["buildDefinition"].get("resolvedDependencies", [])
        commits = [d["digest"]["gitCommit"].lower() for d in deps if "gitCommit" in d.get("digest", {})]
        if not commits:
            raise ProvenanceVerificationError("no gitCommit in buildDefinition.resolvedDependencies")
        if want_commit not in commits:
            raise ProvenanceVerificationError(f"commit {', '.join(commits)} != expected {want_commit}")

    if expected_builder_id is not None:
        builder = predicate["runDetails"]["builder"]["id"]
        if builder != expected_builder_id:
            raise ProvenanceVerificationError(f"builder id {builder!r} != expected {expected_builder_id!r}")
    return statement


# --------------------------------------------------------------------------- CLI


def _write_private(path: Path, data: str, *, force: bool) -> None:
    """Create the file 0600 atomically (O_EXCL) so the key is never briefly world-readable."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)  # O_TRUNC on an existing file keeps its old mode
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(data)


def _cmd_keygen(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    priv_path, pub_path = out / PRIVATE_KEY_FILENAME, out / PUBLIC_KEY_FILENAME
    if not args.force and (priv_path.exists() or pub_path.exists()):
        print(f"refusing to overwrite existing key in {out} (use --force)", file=sys.stderr)
        return 1
    private_pem, public_pem = generate_keypair(args.algorithm)
    _write_private(priv_path, private_pem, force=args.force)
    pub_path.write_text(public_pem, encoding="ascii")
    print(f"wrote {priv_path} (0600) and {pub_path}; keyid {keyid_of(public_pem)}")
    print(f'sign with: export {DEFAULT_KEY_ENV}="$(cat {priv_path})"')
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    try:
        envelope_text = Path(args.envelope).read_text(encoding="utf-8")
        public_pem = Path(args.public_key).read_text(encoding="utf-8")
    except OSError as exc:
        print(f"provenance verification failed: {exc}", file=sys.stderr)
        return 1
    try:
        statement = verify(
            envelope_text,
            public_key_pem=public_pem,
            expected_subject_digest=args.digest,
            expected_commit=args.commit,
            expected_builder_id=args.builder_id,
        )
    except ProvenanceVerificationError as exc:
        print(f"provenance verification failed: {exc}", file=sys.stderr)
        return 1
    subject = statement["subject"][0]
    print(f"OK: {subject['name']} sha256:{subject['digest']['sha256']} verified with key {keyid_of(public_pem)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit code (0 ok, 1 failure, 2 usage)."""
    parser = argparse.ArgumentParser(
        prog="python -m sevenp_pipeline.scanners.provenance", description="Signed SLSA v1 build provenance."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    keygen = sub.add_parser("keygen", help="generate a signing key pair")
    keygen.add_argument("--out", required=True, help="directory for signing-key.pem / signing-key.pub.pem")
    keygen.add_argument("--algorithm", choices=["ed25519", "ecdsa-p256"], default="ed25519")
    keygen.add_argument("--force", action="store_true", help="overwrite an existing key pair")
    keygen.set_defaults(func=_cmd_keygen)

    ver = sub.add_parser("verify", help="verify a DSSE provenance envelope")
    ver.add_argument("envelope", help="DSSE envelope JSON file")
    ver.add_argument("--public-key", required=True, help="PEM public key file")
    ver.add_argument("--digest", required=True, help="expected artifact digest, sha256:<hex>")
    ver.add_argument("--commit", help="expected 40-hex git commit")
    ver.add_argument("--builder-id", help="expected runDetails.builder.id")
    ver.set_defaults(func=_cmd_verify)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
