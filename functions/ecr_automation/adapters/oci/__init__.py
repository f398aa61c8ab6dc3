"""Copy images between OCI registries (ECR or any other) with every digest preserved.

The only code here that touches the network: ``client`` speaks the OCI distribution API over urllib3,
``copier`` orders and streams a copy, ``auth`` supplies credentials (ECR tokens through boto3, lazily).
"""

from ecr_automation.adapters.oci.auth import (
    Credentials,
    CredentialSource,
    EcrCredentials,
    EcrTokenProvider,
    StaticCredentials,
    ecr_registry,
)
from ecr_automation.adapters.oci.copier import Copier, CopyError, CopyInterrupted, CopyReport, UploadMode
from ecr_automation.adapters.oci.reference import InvalidReferenceError, Reference

__all__ = [
    "Copier",
    "CopyError",
    "CopyInterrupted",
    "CopyReport",
    "CredentialSource",
    "Credentials",
    "EcrCredentials",
    "EcrTokenProvider",
    "InvalidReferenceError",
    "Reference",
    "StaticCredentials",
    "UploadMode",
    "ecr_registry",
]
