"""One boto3 base for the AWS resources (ECR, ECS, the S3 artifact store).

It *is* dagster-aws's :class:`~dagster_aws.utils.ResourceWithBoto3Configuration` (region, profile,
endpoint, TLS, credentials, retries as documented fields), plus the one client factory every AWS
resource here uses. Credentials come from ``dg.EnvVar`` in the deployment's resource set
(``resource_set.py``) or, when left None, from boto3's default chain (profile, instance role).
"""

from __future__ import annotations

from typing import Any

from dagster_aws.utils import ResourceWithBoto3Configuration
from pydantic import Field

DEFAULT_REGION = "us-east-1"


class AwsResource(ResourceWithBoto3Configuration):
    """A resource that talks to AWS (or an emulator at ``endpoint_url``, e.g. a moto server) through boto3."""

    connect_timeout_seconds: float = Field(default=5, description="boto3 connect timeout")
    read_timeout_seconds: float = Field(default=60, description="boto3 read timeout")

    @property
    def region(self) -> str:
        """The configured region, else boto3's default (``AWS_REGION`` / profile), else us-east-1."""
        if self.region_name:
            return self.region_name
        import boto3  # noqa: PLC0415 (boto3 takes ~0.3 s to import; only AWS deployments pay it)

        return boto3.session.Session(profile_name=self.profile_name).region_name or DEFAULT_REGION

    def client(self, service: str, *, max_attempts: int | None = None, region: str | None = None) -> Any:
        """A boto3 client for ``service`` with this resource's region, endpoint, TLS, credentials and timeouts.

        Args:
            service: the boto3 service name, e.g. ``"ecr"``.
            max_attempts: boto3's own tries per call; None uses the ``max_attempts`` field.
            region: overrides the resource's region (an environment's ECS cluster may live elsewhere).
        """
        import boto3  # noqa: PLC0415
        from botocore.config import Config  # noqa: PLC0415

        session = boto3.session.Session(profile_name=self.profile_name)
        return session.client(
            service, region_name=region or self.region, endpoint_url=self.endpoint_url, use_ssl=self.use_ssl,
            verify=self.verify, aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key, aws_session_token=self.aws_session_token,
            config=Config(retries={"max_attempts": max_attempts or self.max_attempts, "mode": "standard"},
                          connect_timeout=self.connect_timeout_seconds, read_timeout=self.read_timeout_seconds),
        )
