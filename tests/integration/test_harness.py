"""The stand-ins themselves: each is real enough to fail a test that deserves it."""

from __future__ import annotations

import json

import requests
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.webhook import WebhookClient

from tests.support.moto_server import MotoServer
from tests.support.registry import OCI_INDEX, OCI_MANIFEST, OciRegistry, sha256_digest
from tests.support.slack_sink import SlackSink


def test_moto_server_speaks_http_and_resets(aws: MotoServer) -> None:
    ecr = aws.client("ecr")
    ecr.create_repository(repositoryName="harness/one")
    assert [repo["repositoryName"] for repo in ecr.describe_repositories()["repositories"]] == ["harness/one"]
    aws.reset()
    assert aws.client("ecr").describe_repositories()["repositories"] == []


def test_injected_scan_findings_are_served(aws: MotoServer) -> None:
    ecr = aws.client("ecr")
    ecr.create_repository(repositoryName="harness/scan")
    manifest = '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}'
    digest = sha256_digest(manifest.encode())
    ecr.put_image(repositoryName="harness/scan", imageManifest=manifest, imageDigest=digest, imageTag="v1")
    findings = {"findings": [{"name": "CVE-2024-0001", "severity": "HIGH"}], "findingSeverityCounts": {"HIGH": 1}}
    aws.inject_scan_findings(
        [
            {
                "registryId": "123456789012",
                "repositoryName": "harness/scan",
                "imageId": {"imageDigest": digest},
                "imageScanStatus": {"status": "COMPLETE", "description": "done"},
                "imageScanFindings": findings,
            }
        ]
    )
    ecr.start_image_scan(repositoryName="harness/scan", imageId={"imageDigest": digest})
    served = ecr.describe_image_scan_findings(repositoryName="harness/scan", imageId={"imageDigest": digest})
    assert served["imageScanFindings"]["findings"][0]["name"] == "CVE-2024-0001"


def test_registry_stores_manifests_byte_for_byte_and_blobs(oci_registry: OciRegistry) -> None:
    layer = b"layer bytes " * 1000
    digest, manifest = oci_registry.push_image("harness/app", "v1", [layer])

    served, media_type, served_digest = oci_registry.get_manifest("harness/app", "v1")

    assert served == manifest and media_type == OCI_MANIFEST
    assert served_digest == digest == sha256_digest(manifest)
    assert oci_registry.blob("harness/app", sha256_digest(layer)) == layer
    assert oci_registry.tags("harness/app") == ["v1"]


def test_registry_refuses_a_manifest_whose_blobs_are_missing(oci_registry: OciRegistry) -> None:
    config = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256_digest(b"absent"), "size": 2}
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": []}).encode()
    response = oci_registry.session.put(
        f"{oci_registry.url}/v2/harness/broken/manifests/v1",
        data=manifest,
        headers={"Content-Type": OCI_MANIFEST},
        timeout=10,
    )
    assert response.status_code == 400


def test_registry_index_children_resolve(oci_registry: OciRegistry) -> None:
    digest, index = oci_registry.push_index("harness/multi", "v1", {"linux/amd64": [b"amd"], "linux/arm64": [b"arm"]})
    served, media_type, _ = oci_registry.get_manifest("harness/multi", "v1")
    assert served == index and media_type == OCI_INDEX and digest == sha256_digest(index)
    for child in json.loads(index)["manifests"]:
        assert oci_registry.get_manifest("harness/multi", child["digest"])[2] == child["digest"]


def test_registry_with_auth_accepts_the_ecr_token_only(
    oci_registry_auth: OciRegistry, ecr_token: tuple[str, str]
) -> None:
    assert requests.get(f"{oci_registry_auth.url}/v2/", timeout=10).status_code == 401
    assert requests.get(f"{oci_registry_auth.url}/v2/", auth=("AWS", "wrong"), timeout=10).status_code == 401
    assert requests.get(f"{oci_registry_auth.url}/v2/", auth=ecr_token, timeout=10).status_code == 200
    assert ecr_token[0] == "AWS"


def test_slack_sink_records_valid_block_kit(slack_sink: SlackSink) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*CVE-2023-44487* fixed in 1.52.0-1+deb12u1"}}]
    response = WebhookClient(slack_sink.url).send(text="1 finding", blocks=blocks)
    assert response.status_code == 200 and response.body == "ok"
    (post,) = slack_sink.wait_for(1)
    assert post.body["blocks"] == blocks and post.errors == []


def test_slack_sink_flags_what_slack_would_refuse(slack_sink: SlackSink) -> None:
    too_long = [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}]
    WebhookClient(slack_sink.url).send(text="too long", blocks=too_long)
    (post,) = slack_sink.wait_for(1)
    assert post.errors and "blocks[0]" in post.errors[0]


def test_slack_sink_rate_limit_is_retried_by_slack_sdk(slack_sink: SlackSink) -> None:
    slack_sink.fail_next(429)
    client = WebhookClient(slack_sink.url, retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=2)])
    response = client.send(text="after a 429")
    assert response.status_code == 200
    assert [post.body["text"] for post in slack_sink.wait_for(1)] == ["after a 429"]
