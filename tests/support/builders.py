"""Builders for events and resources shaped exactly as AWS delivers or the template declares them."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ecr_automation.local.template import SamTemplate
from tests.conftest import ROOT

ACCOUNT, REGION, REPOSITORY = "123456789012", "us-east-1", "team/web"
TIME = "2026-11-28T12:00:00Z"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def ecr_event(
    detail_type: str,
    detail: dict[str, Any],
    *,
    event_id: str,
    source: str = "aws.ecr",
    resources: list[str] | None = None,
) -> dict[str, Any]:
    """An EventBridge envelope around ``detail``."""
    return {
        "version": "0",
        "id": event_id,
        "detail-type": detail_type,
        "source": source,
        "account": ACCOUNT,
        "time": TIME,
        "region": REGION,
        "resources": resources or [],
        "detail": detail,
    }


def image_action(
    action: str, tag: str | None, digest: str, *, event_id: str = "e-1", repository: str = REPOSITORY
) -> dict[str, Any]:
    """An `ECR Image Action` event; no `image-tag` key at all for a push by digest, as ECR sends it."""
    detail: dict[str, Any] = {
        "result": "SUCCESS",
        "repository-name": repository,
        "image-digest": digest,
        "action-type": action,
    }
    if tag is not None:
        detail["image-tag"] = tag
    return ecr_event("ECR Image Action", detail, event_id=event_id)


def create_table_like(dynamodb: Any, logical_id: str, name: str) -> None:
    """Create ``name`` with the keys template.yaml declares for ``logical_id``, so tests follow the template."""
    properties = SamTemplate.load(ROOT / "template.yaml").resources_of_type("AWS::DynamoDB::Table")[logical_id]
    dynamodb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=properties["AttributeDefinitions"],
        KeySchema=properties["KeySchema"],
    )


def digest_of(body: str) -> str:
    return "sha256:" + hashlib.sha256(body.encode()).hexdigest()


def image_manifest(seed: str, architecture: str = "amd64") -> str:
    # Unusual formatting on purpose: any re-serialisation on the way would change the digest.
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(seed), "size": 2},
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": digest_of(f"{seed}/{architecture}"),
                    "size": 10,
                }
            ],
        },
        indent=3,
    )


def index_manifest(children: list[tuple[str, str]]) -> str:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": digest_of(body),
                    "size": len(body.encode()),
                    "platform": {"architecture": architecture, "os": "linux"},
                }
                for architecture, body in children
            ],
        },
        separators=(",", " : "),
    )
