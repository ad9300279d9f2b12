"""The image registry role and its implementations, one module per concern.

``role`` (Registry, PushResult, errors, retrying), ``transport`` (skopeo copy / inspect),
``local`` (LocalRegistry), ``ecr`` (ECRRegistry) on ``aws`` (the boto3 base of AWS resources).
ECRRegistry is imported from ``registries.ecr`` directly, so only ECR deployments import boto3.
"""

from sevenp_pipeline.resources.registries.local import LocalRegistry
from sevenp_pipeline.resources.registries.role import PushResult, Registry, RegistryError
from sevenp_pipeline.resources.registries.transport import SkopeoTransport

__all__ = ["LocalRegistry", "PushResult", "Registry", "RegistryError", "SkopeoTransport"]
