"""The provenance signing key as a resource, so the PEM reaches the pipeline only through ``dg.EnvVar``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg
from pydantic import Field

from sevenp_pipeline.scanners import provenance as prov

SIGNING_KEY_ENV = "SEVENP_SIGNING_KEY"


class SigningKey(dg.ConfigurableResource):
    """The PEM private key (Ed25519 or ECDSA P-256) that signs provenance; set from ``dg.EnvVar(SEVENP_SIGNING_KEY)``.

    Empty when the variable is unset (see ``resource_set.py``): then only the step that
    signs fails, naming SEVENP_SIGNING_KEY, and the scans and gates before it still run and report.
    """

    pem: str = Field(default="", description=f"PEM private key; set it with dg.EnvVar({SIGNING_KEY_ENV!r})")

    def _env(self) -> Mapping[str, str]:
        return {SIGNING_KEY_ENV: self.pem}

    def sign(self, statement: Mapping[str, Any]) -> dict[str, Any]:
        """The statement in a DSSE envelope signed with this key.

        Raises:
            ProvenanceError: no key, or not a usable one; the message names SEVENP_SIGNING_KEY, never the key.
        """
        return prov.sign(statement, key_env=SIGNING_KEY_ENV, env=self._env())

    def public_pem(self) -> str:
        """The public half, for verifying what was signed (and for pinning in the deploy gate)."""
        return prov.public_key_pem(SIGNING_KEY_ENV, self._env())

    @property
    def key_id(self) -> str:
        """The key id signatures carry (securesystemslib's, from the public key)."""
        return prov.keyid_of(self.public_pem())

    @property
    def configured(self) -> bool:
        """A key is set (whether it is usable is checked when signing, with a message naming the variable)."""
        return bool(self.pem.strip())
