"""Signed provenance: statement shape, DSSE sign/verify, tamper detection, key handling, CLI."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import subprocess
import sys
import traceback
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from securesystemslib.dsse import Envelope
from securesystemslib.signer import CryptoSigner

from sevenp_pipeline.scanners import provenance as prov
from sevenp_pipeline.scanners.provenance import (
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    ProvenanceError,
    ProvenanceVerificationError,
    build_statement,
    generate_keypair,
    keyid_of,
    public_key_pem,
    sign,
    verify,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DIGEST = "a" * 64
OTHER_DIGEST = "b" * 64
SBOM_DIGEST = "c" * 64
COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER_COMMIT = "f" * 40
BUILDER = "https://7p.example/sevenp-pipeline/builder@v1"
ENV_VAR = "SEVENP_SIGNING_KEY"
START = datetime(2025, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


def _statement(**overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "subject_name": "registry.example/7p-education-api",
        "subject_digest": f"sha256:{DIGEST}",
        "repository_uri": "https://github.com/7p/education-api",
        "commit_sha": COMMIT,
        "builder_id": BUILDER,
        "build_type": "https://7p.example/sevenp-pipeline/build/v1",
        "external_parameters": {"app": "7p-education-api", "stage": "build"},
        "internal_parameters": {"dagster_run_id": "run-123"},
        "byproducts": [
            prov.resource_descriptor("sbom.spdx.json", f"sha256:{SBOM_DIGEST}", media_type="application/spdx+json")
        ],
        "started_at": START,
        "finished_at": START + timedelta(minutes=3),
        "invocation_id": "run-123",
    }
    kwargs.update(overrides)
    return build_statement(**kwargs)


@pytest.fixture(scope="module")
def ed_keys() -> tuple[str, str]:
    return generate_keypair("ed25519")


@pytest.fixture
def env(ed_keys: tuple[str, str]) -> dict[str, str]:
    return {ENV_VAR: ed_keys[0]}


@pytest.fixture
def signed(env: dict[str, str]) -> dict[str, Any]:
    return sign(_statement(), env=env)


def _payload(envelope: dict[str, Any]) -> dict[str, Any]:
    return json.loads(base64.b64decode(envelope["payload"]))


def _with_payload(envelope: dict[str, Any], statement: dict[str, Any]) -> dict[str, Any]:
    tampered = json.loads(json.dumps(envelope))
    tampered["payload"] = base64.b64encode(prov.canonical_json(statement)).decode()
    return tampered


def _resign(payload: bytes, payload_type: str, private_pem: str) -> dict[str, Any]:
    """Sign arbitrary bytes with the legitimate key, to reach the checks that run after the signature."""
    key = serialization.load_pem_private_key(private_pem.encode(), None)
    envelope = Envelope(payload, payload_type, {})
    envelope.sign(CryptoSigner(key))  # type: ignore[arg-type]
    return envelope.to_dict()


# --------------------------------------------------------------------------- statement


def test_statement_shape() -> None:
    st = _statement(ref="refs/heads/main")
    assert st["_type"] == STATEMENT_TYPE == "https://in-toto.io/Statement/v1"
    assert st["predicateType"] == PREDICATE_TYPE == "https://slsa.dev/provenance/v1"
    assert st["subject"] == [{"name": "registry.example/7p-education-api", "digest": {"sha256": DIGEST}}]
    bd = st["predicate"]["buildDefinition"]
    assert bd["buildType"] == "https://7p.example/sevenp-pipeline/build/v1"
    assert bd["externalParameters"] == {"app": "7p-education-api", "stage": "build"}
    assert bd["internalParameters"] == {"dagster_run_id": "run-123"}
    assert bd["resolvedDependencies"] == [
        {"uri": "git+https://github.com/7p/education-api@refs/heads/main", "digest": {"gitCommit": COMMIT}}
    ]
    rd = st["predicate"]["runDetails"]
    assert rd["builder"] == {"id": BUILDER}
    assert rd["metadata"] == {
        "invocationId": "run-123",
        "startedOn": "2025-03-01T12:00:00Z",
        "finishedOn": "2025-03-01T12:03:00Z",
    }
    assert rd["byproducts"] == [
        {"name": "sbom.spdx.json", "digest": {"sha256": SBOM_DIGEST}, "mediaType": "application/spdx+json"}
    ]


def test_statement_normalises_inputs() -> None:
    st = _statement(
        subject_digest=DIGEST.upper(),  # bare, uppercase hex
        commit_sha=COMMIT.upper(),
        repository_uri="/srv/git/education-api.git",  # local remote -> file URI
        started_at="2025-03-01T14:00:00+02:00",
        finished_at="2025-03-01T12:05:00Z",
    )
    assert st["subject"][0]["digest"] == {"sha256": DIGEST}
    assert st["predicate"]["buildDefinition"]["resolvedDependencies"] == [
        {"uri": f"git+file:///srv/git/education-api.git@{COMMIT}", "digest": {"gitCommit": COMMIT}}
    ]
    assert st["predicate"]["runDetails"]["metadata"]["startedOn"] == "2025-03-01T12:00:00Z"
    assert st["predicate"]["runDetails"]["metadata"]["finishedOn"] == "2025-03-01T12:05:00Z"


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"subject_digest": "sha256:" + "a" * 63}, "subject_digest must be 'sha256:<64 hex chars>'"),
        ({"subject_digest": "sha512:" + "a" * 64}, "subject_digest"),
        ({"subject_digest": "g" * 64}, "subject_digest"),
        ({"commit_sha": COMMIT[:12]}, "commit_sha must be a full 40-hex git commit SHA"),
        ({"commit_sha": "z" * 40}, "commit_sha"),
        ({"started_at": datetime(2025, 3, 1, 12, 0)}, "started_at must be timezone-aware"),
        ({"finished_at": "yesterday"}, "finished_at is not an ISO 8601"),
        ({"finished_at": START - timedelta(seconds=1)}, "is before started_at"),
        ({"byproducts": [{"name": "sbom", "digest": {"sha256": "nothex"}}]}, r"byproducts\[0\].digest.sha256"),
        ({"byproducts": [{}]}, r"byproducts\[0\] needs at least one of name, uri or digest"),
        ({"external_parameters": {"x": object()}}, "not JSON-serialisable"),
        ({"builder_id": ""}, "builder_id must be a non-empty string"),
        ({"invocation_id": "  "}, "invocation_id must be a non-empty string"),
    ],
)
def test_statement_rejects_bad_input(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(ProvenanceError, match=match):
        _statement(**overrides)


def test_sign_refuses_statement_outside_slsa_schema(env: dict[str, str]) -> None:
    st = _statement()
    st["predicate"]["runDetails"]["metadata"]["startedOn"] = "2025-03-01 12:00"  # no timezone
    with pytest.raises(ProvenanceError, match="does not match the in-toto/SLSA v1 schema"):
        sign(st, env=env)
    st = _statement()
    st["predicate"]["buildDefinition"]["buildtype"] = st["predicate"]["buildDefinition"].pop("buildType")
    with pytest.raises(ProvenanceError, match="buildtype"):
        sign(st, env=env)


# --------------------------------------------------------------------------- sign / verify


def test_round_trip_ed25519(signed: dict[str, Any], ed_keys: tuple[str, str]) -> None:
    assert signed["payloadType"] == PAYLOAD_TYPE
    assert [s["keyid"] for s in signed["signatures"]] == [keyid_of(ed_keys[1])]
    st = verify(
        signed,
        public_key_pem=ed_keys[1],
        expected_subject_digest=f"sha256:{DIGEST}",
        expected_commit=COMMIT,
        expected_builder_id=BUILDER,
    )
    assert st == _statement()
    # also accepts the envelope as JSON text, as read from disk
    assert verify(json.dumps(signed), public_key_pem=ed_keys[1], expected_subject_digest=DIGEST) == st


def test_payload_is_deterministic_canonical_json(env: dict[str, str]) -> None:
    a, b = sign(_statement(), env=env), sign(_statement(), env=env)
    raw = base64.b64decode(a["payload"])
    assert raw == base64.b64decode(b["payload"])
    assert raw == json.dumps(_statement(), sort_keys=True, separators=(",", ":")).encode()
    assert b" " not in raw.split(b'"subject"')[0]  # compact separators
    assert a == b  # ed25519 signatures are deterministic too


def test_round_trip_ecdsa_p256() -> None:
    private_pem, public_pem = generate_keypair("ecdsa-p256")
    assert isinstance(serialization.load_pem_public_key(public_pem.encode()), ec.EllipticCurvePublicKey)
    envelope = sign(_statement(), env={ENV_VAR: private_pem})
    assert verify(envelope, public_key_pem=public_pem, expected_subject_digest=DIGEST, expected_commit=COMMIT)
    other_private, _ = generate_keypair("ed25519")
    with pytest.raises(ProvenanceVerificationError, match="signature does not verify"):
        verify(
            sign(_statement(), env={ENV_VAR: other_private}), public_key_pem=public_pem, expected_subject_digest=DIGEST
        )


def test_custom_key_env_and_escaped_newlines(ed_keys: tuple[str, str]) -> None:
    flattened = ed_keys[0].strip().replace("\n", "\\n")  # how many secret stores hand PEMs over
    envelope = sign(_statement(), key_env="DEPLOY_KEY", env={"DEPLOY_KEY": flattened})
    assert verify(envelope, public_key_pem=ed_keys[1], expected_subject_digest=DIGEST)
    assert public_key_pem("DEPLOY_KEY", {"DEPLOY_KEY": flattened}) == ed_keys[1]


def test_tampered_payload_fails_signature(signed: dict[str, Any], ed_keys: tuple[str, str]) -> None:
    st = _payload(signed)
    st["subject"][0]["digest"]["sha256"] = OTHER_DIGEST
    tampered = _with_payload(signed, st)
    keyid = keyid_of(ed_keys[1])
    # even when the caller expects the forged digest, the signature check must stop it first
    with pytest.raises(ProvenanceVerificationError, match=f"signature does not verify with key {keyid}: payload"):
        verify(tampered, public_key_pem=ed_keys[1], expected_subject_digest=OTHER_DIGEST)


def test_tampered_signature_fails(signed: dict[str, Any], ed_keys: tuple[str, str]) -> None:
    tampered = json.loads(json.dumps(signed))
    sig = bytearray(base64.b64decode(tampered["signatures"][0]["sig"]))
    sig[0] ^= 0x01
    tampered["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    with pytest.raises(ProvenanceVerificationError, match=f"signature does not verify with key {keyid_of(ed_keys[1])}"):
        verify(tampered, public_key_pem=ed_keys[1], expected_subject_digest=DIGEST)


def test_forged_signature_relabelled_with_trusted_keyid_fails(signed: dict[str, Any], ed_keys: tuple[str, str]) -> None:
    attacker_private, _ = generate_keypair("ed25519")
    st = _payload(signed)
    st["subject"][0]["digest"]["sha256"] = OTHER_DIGEST
    forged = _resign(prov.canonical_json(st), PAYLOAD_TYPE, attacker_private)
    forged["signatures"][0]["keyid"] = keyid_of(ed_keys[1])
    with pytest.raises(ProvenanceVerificationError, match=r"signature does not verify with key \w+: payload"):
        verify(forged, public_key_pem=ed_keys[1], expected_subject_digest=OTHER_DIGEST)


def test_different_key_fails(signed: dict[str, Any]) -> None:
    _, other_public = generate_keypair("ed25519")
    other_id = keyid_of(other_public)
    signer_id = signed["signatures"][0]["keyid"]
    with pytest.raises(ProvenanceVerificationError) as exc_info:
        verify(signed, public_key_pem=other_public, expected_subject_digest=DIGEST)
    msg = str(exc_info.value)
    assert msg.startswith(f"signature does not verify with key {other_id}")
    assert f"no signature by this key (signed by: {signer_id})" in msg


def test_payload_type_is_covered_by_signature(signed: dict[str, Any], ed_keys: tuple[str, str]) -> None:
    tampered = dict(signed, payloadType="application/json")
    with pytest.raises(ProvenanceVerificationError, match="signature does not verify"):
        verify(tampered, public_key_pem=ed_keys[1], expected_subject_digest=DIGEST)
    resigned = _resign(base64.b64decode(signed["payload"]), "application/json", ed_keys[0])
    with pytest.raises(ProvenanceVerificationError, match="payloadType 'application/json' != expected"):
        verify(resigned, public_key_pem=ed_keys[1], expected_subject_digest=DIGEST)


def test_validly_signed_non_provenance_statement_rejected(signed: dict[str, Any], ed_keys: tuple[str, str]) -> None:
    st = _payload(signed)
    st["predicateType"] = "https://spdx.dev/Document"
    resigned = _resign(prov.canonical_json(st), PAYLOAD_TYPE, ed_keys[0])
    with pytest.raises(ProvenanceVerificationError, match=re.escape("predicateType 'https://spdx.dev/Document'")):
        verify(resigned, public_key_pem=ed_keys[1], expected_subject_digest=DIGEST)
    resigned = _resign(b"not json", PAYLOAD_TYPE, ed_keys[0])
    with pytest.raises(ProvenanceVerificationError, match="payload is not valid JSON"):
        verify(resigned, public_key_pem=ed_keys[1], expected_subject_digest=DIGEST)


def test_wrong_expected_digest(signed: dict[str, Any], ed_keys: tuple[str, str]) -> None:
    with pytest.raises(ProvenanceVerificationError) as exc_info:
        verify(signed, public_key_pem=ed_keys[1], expected_subject_digest=f"sha256:{OTHER_DIGEST}")
    assert str(exc_info.value) == f"subject digest sha256:{DIGEST} != expected sha256:{OTHER_DIGEST}"


def test_wrong_expected_commit(signed: dict[str, Any], ed_keys: tuple[str, str]) -> None:
    with pytest.raises(ProvenanceVerificationError) as exc_info:
        verify(signed, public_key_pem=ed_keys[1], expected_subject_digest=DIGEST, expected_commit=OTHER_COMMIT)
    assert str(exc_info.value) == f"commit {COMMIT} != expected {OTHER_COMMIT}"


def test_wrong_expected_builder(signed: dict[str, Any], ed_keys: tuple[str, str]) -> None:
    with pytest.raises(ProvenanceVerificationError) as exc_info:
        verify(signed, public_key_pem=ed_keys[1], expected_subject_digest=DIGEST, expected_builder_id="https://evil.ex")
    assert str(exc_info.value) == f"builder id {BUILDER!r} != expected 'https://evil.ex'"


def test_bad_expectations_are_verification_errors(signed: dict[str, Any], ed_keys: tuple[str, str]) -> None:
    with pytest.raises(ProvenanceVerificationError, match="expected_subject_digest"):
        verify(signed, public_key_pem=ed_keys[1], expected_subject_digest="latest")
    with pytest.raises(ProvenanceVerificationError, match="expected_commit"):
        verify(signed, public_key_pem=ed_keys[1], expected_subject_digest=DIGEST, expected_commit="abc123")
    with pytest.raises(ProvenanceVerificationError, match="public key is not a valid PEM"):
        verify(signed, public_key_pem="nope", expected_subject_digest=DIGEST)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda e: e.pop("signatures"), "missing field 'signatures'"),
        (lambda e: e.update(signatures=[]), "no signatures"),
        (lambda e: e.update(payload="%%% not base64 %%%"), "malformed envelope"),
        (lambda e: e["signatures"][0].update(sig="%%%"), "malformed envelope"),
    ],
)
def test_malformed_envelope(signed: dict[str, Any], ed_keys: tuple[str, str], mutate: Any, match: str) -> None:
    envelope = json.loads(json.dumps(signed))
    mutate(envelope)
    with pytest.raises(ProvenanceVerificationError, match=match):
        verify(envelope, public_key_pem=ed_keys[1], expected_subject_digest=DIGEST)


def test_verify_does_not_mutate_callers_envelope(signed: dict[str, Any], ed_keys: tuple[str, str]) -> None:
    before = json.loads(json.dumps(signed))
    verify(signed, public_key_pem=ed_keys[1], expected_subject_digest=DIGEST)
    verify(signed, public_key_pem=ed_keys[1], expected_subject_digest=DIGEST)  # reusable, not re-decoded
    assert signed == before


# --------------------------------------------------------------------------- key handling


def _assert_secret_not_leaked(exc: BaseException, secret: str) -> None:
    rendered = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    assert secret not in rendered
    assert secret not in repr(exc)
    assert exc.__cause__ is None
    assert exc.__suppress_context__


@pytest.mark.parametrize("env_value", [None, "", "   \n"])
def test_missing_key_names_variable(env_value: str | None) -> None:
    env = {} if env_value is None else {ENV_VAR: env_value}
    with pytest.raises(ProvenanceError, match=f"signing key environment variable {ENV_VAR} is not set or empty"):
        sign(_statement(), env=env)


@pytest.mark.parametrize(
    ("secret", "marker"),
    [
        ("SEVENP-FAKE-SECRET-7f3a9c-do-not-print", "SEVENP-FAKE-SECRET-7f3a9c"),
        (
            "-----BEGIN PRIVATE KEY-----\nSEVENPFAKESECRET7f3a9cDoNotPrint==\n-----END PRIVATE KEY-----\n",
            "SEVENPFAKESECRET7f3a9c",
        ),
    ],
    ids=["garbage", "pem-shaped"],  # keep even the fake secret out of test ids
)
def test_invalid_key_never_leaks_value(secret: str, marker: str) -> None:
    with pytest.raises(ProvenanceError) as exc_info:
        sign(_statement(), key_env="MY_SIGNING_KEY", env={"MY_SIGNING_KEY": secret})
    assert "MY_SIGNING_KEY" in str(exc_info.value)
    assert "does not hold a valid PEM private key" in str(exc_info.value)
    _assert_secret_not_leaked(exc_info.value, marker)
    with pytest.raises(ProvenanceError) as exc_info:
        public_key_pem("MY_SIGNING_KEY", {"MY_SIGNING_KEY": secret})
    assert "MY_SIGNING_KEY" in str(exc_info.value)


def test_unsupported_and_encrypted_keys_rejected() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_pem = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    with pytest.raises(ProvenanceError, match=f"signing key in {ENV_VAR}: unsupported key type"):
        sign(_statement(), env={ENV_VAR: rsa_pem})
    p384 = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    with pytest.raises(ProvenanceError, match="unsupported key type"):
        sign(_statement(), env={ENV_VAR: p384})
    encrypted = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"hunter2"),
    ).decode()
    with pytest.raises(ProvenanceError, match=f"{ENV_VAR} is password-protected"):
        sign(_statement(), env={ENV_VAR: encrypted})


def test_public_key_pem_matches_keypair(ed_keys: tuple[str, str]) -> None:
    assert public_key_pem(ENV_VAR, {ENV_VAR: ed_keys[0]}) == ed_keys[1]
    assert "PRIVATE" not in ed_keys[1]
    assert ed_keys[0].startswith("-----BEGIN PRIVATE KEY-----")


# --------------------------------------------------------------------------- CLI


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sevenp_pipeline.scanners.provenance", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
        check=False,
    )


def test_cli_keygen_and_verify(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    result = _cli("keygen", "--out", str(keys))
    assert result.returncode == 0, result.stderr
    private, public = keys / "signing-key.pem", keys / "signing-key.pub.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert "BEGIN PRIVATE KEY" not in result.stdout + result.stderr  # key material never printed
    assert keyid_of(public.read_text()) in result.stdout

    again = _cli("keygen", "--out", str(keys))
    assert again.returncode == 1
    assert "refusing to overwrite" in again.stderr

    envelope_path = tmp_path / "provenance.dsse.json"
    envelope_path.write_text(json.dumps(sign(_statement(), env={ENV_VAR: private.read_text()})))
    base = ["verify", str(envelope_path), "--public-key", str(public)]

    ok = _cli(*base, "--digest", f"sha256:{DIGEST}", "--commit", COMMIT)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("OK: registry.example/7p-education-api")

    bad_digest = _cli(*base, "--digest", f"sha256:{OTHER_DIGEST}")
    assert bad_digest.returncode == 1
    assert f"subject digest sha256:{DIGEST} != expected sha256:{OTHER_DIGEST}" in bad_digest.stderr

    bad_commit = _cli(*base, "--digest", f"sha256:{DIGEST}", "--commit", OTHER_COMMIT)
    assert bad_commit.returncode == 1
    assert f"commit {COMMIT} != expected {OTHER_COMMIT}" in bad_commit.stderr

    other = tmp_path / "other"
    assert _cli("keygen", "--out", str(other), "--algorithm", "ecdsa-p256").returncode == 0
    other_pub = str(other / "signing-key.pub.pem")
    wrong_key = _cli("verify", str(envelope_path), "--public-key", other_pub, "--digest", DIGEST)
    assert wrong_key.returncode == 1
    assert "signature does not verify with key" in wrong_key.stderr

    missing = _cli("verify", str(tmp_path / "nope.json"), "--public-key", str(public), "--digest", DIGEST)
    assert missing.returncode == 1
    assert "provenance verification failed" in missing.stderr


def test_keygen_force_overwrites_with_private_mode(tmp_path: Path) -> None:
    private = tmp_path / "signing-key.pem"
    private.write_text("old")
    os.chmod(private, 0o644)
    assert prov.main(["keygen", "--out", str(tmp_path), "--force"]) == 0
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
