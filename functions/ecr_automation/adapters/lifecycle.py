"""Amazon ECR's lifecycle policies: the policy in force, every image (all pages), and ECR's own preview.

Read only: nothing here puts, changes or deletes a policy. The preview (StartLifecyclePolicyPreview, then
GetLifecyclePolicyPreview until it completes) is ECR's own evaluation; moto does not implement it, and a
real preview may take longer than we wait: both come back as an unavailable preview saying why.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ecr_automation.adapters.clients import DEFAULT_CLIENT_CONFIG, AwsClients, client_in
from ecr_automation.models.domain import RepositoryRef
from ecr_automation.models.lifecycle import (
    ActionType,
    LifecycleImage,
    Preview,
    PreviewResult,
    RepositoryNotFoundError,
    StorageClass,
)

# The preview is a cross-check, not the check: one retry, so an endpoint without it (moto answers 500)
# costs a second, not the standard retries' backoff.
PREVIEW_CLIENT_CONFIG = DEFAULT_CLIENT_CONFIG.merge(Config(retries={"mode": "standard", "total_max_attempts": 2}))
PREVIEW_DONE = frozenset({"COMPLETE", "FAILED", "EXPIRED"})
DESCRIBE_PAGE = 1000


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def image_from(detail: dict[str, Any]) -> LifecycleImage:
    """A DescribeImages ``imageDetails`` entry as the lifecycle evaluation sees it."""
    archived = detail.get("imageStatus") == "ARCHIVED"
    pushed_at = _aware(detail.get("imagePushedAt")) or datetime.fromtimestamp(0, UTC)
    return LifecycleImage(
        digest=str(detail["imageDigest"]),
        tags=tuple(sorted(detail.get("imageTags") or ())),
        pushed_at=pushed_at,
        last_pulled_at=_aware(detail.get("lastRecordedPullTime")),
        storage_class=StorageClass.ARCHIVE if archived else StorageClass.STANDARD,
        archived_at=_aware(detail.get("lastArchivedAt")),
    )


def preview_result_from(result: dict[str, Any]) -> PreviewResult:
    """A ``previewResults`` entry; ECR writes the action type in capitals (EXPIRE, TRANSITION)."""
    return PreviewResult(
        digest=str(result["imageDigest"]),
        tags=tuple(sorted(result.get("imageTags") or ())),
        action=ActionType(str((result.get("action") or {}).get("type", "EXPIRE")).lower()),
        rule_priority=int(result.get("appliedRulePriority", 0)),
    )


class EcrLifecycle:
    def __init__(
        self,
        clients: AwsClients,
        *,
        preview_clients: AwsClients | None = None,
        preview_wait_seconds: float = 20.0,
        poll_seconds: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clients = clients
        self._preview_clients = preview_clients or clients
        self._wait = preview_wait_seconds
        self._poll = poll_seconds
        self._sleep = sleep
        self._monotonic = monotonic

    def _ecr(self, repository: RepositoryRef, clients: AwsClients | None = None) -> Any:
        # In the account the repository belongs to (a member account's role, for an organisation).
        return client_in(clients or self._clients, repository.registry_id, "ecr", repository.region)

    def _named(self, repository: RepositoryRef) -> dict[str, str]:
        return {"registryId": repository.registry_id, "repositoryName": repository.name}

    def policy_text(self, repository: RepositoryRef) -> str | None:
        try:
            response = self._ecr(repository).get_lifecycle_policy(**self._named(repository))
        except ClientError as error:
            if _code(error) == "LifecyclePolicyNotFoundException":
                return None
            if _code(error) == "RepositoryNotFoundException":
                raise RepositoryNotFoundError(f"repository {repository.name} does not exist") from None
            raise
        return str(response["lifecyclePolicyText"])

    def images(self, repository: RepositoryRef) -> list[LifecycleImage]:
        """Every image of the repository, all pages."""
        paginator = self._ecr(repository).get_paginator("describe_images")
        pages = paginator.paginate(**self._named(repository), PaginationConfig={"PageSize": DESCRIBE_PAGE})
        try:
            return [image_from(detail) for page in pages for detail in page.get("imageDetails", [])]
        except ClientError as error:
            if _code(error) == "RepositoryNotFoundException":
                raise RepositoryNotFoundError(f"repository {repository.name} does not exist") from None
            raise

    def repositories(self, registry_id: str, region: str) -> Iterator[str]:
        """Every repository of the registry the caller may list, all pages."""
        ecr = client_in(self._clients, registry_id, "ecr", region)
        for page in ecr.get_paginator("describe_repositories").paginate(registryId=registry_id):
            for repository in page.get("repositories", []):
                yield str(repository["repositoryName"])

    def preview(self, repository: RepositoryRef, policy_text: str) -> Preview:
        """ECR's preview of ``policy_text`` on this repository's images, or why there is none."""
        ecr = self._ecr(repository, self._preview_clients)
        try:
            ecr.start_lifecycle_policy_preview(**self._named(repository), lifecyclePolicyText=policy_text)
        except ClientError as error:
            if _code(error) != "LifecyclePolicyPreviewInProgressException":
                return Preview(None, f"ECR's preview is unavailable here ({_code(error)})")
        except NotImplementedError:  # moto in-process
            return Preview(None, "ECR's preview is unavailable here (not implemented)")
        except BotoCoreError as error:
            return Preview(None, f"ECR's preview is unavailable here ({type(error).__name__})")
        return self._collect(ecr, repository, policy_text)

    def _collect(self, ecr: Any, repository: RepositoryRef, policy_text: str) -> Preview:
        deadline = self._monotonic() + self._wait
        while True:
            try:
                first = ecr.get_lifecycle_policy_preview(**self._named(repository))
            except (ClientError, BotoCoreError, NotImplementedError) as error:
                reason = _code(error) if isinstance(error, ClientError) else type(error).__name__
                return Preview(None, f"ECR's preview could not be read ({reason})")
            status = str(first.get("status", ""))
            if status in PREVIEW_DONE:
                break
            if self._monotonic() >= deadline:
                return Preview(None, f"ECR's preview did not complete within {self._wait:.0f} s")
            self._sleep(self._poll)
        if status != "COMPLETE":
            return Preview(None, f"ECR's preview ended {status}")
        if first.get("lifecyclePolicyText") not in {None, policy_text}:
            return Preview(None, "ECR previewed another policy text (a preview was already running)")
        results = []
        pages = ecr.get_paginator("get_lifecycle_policy_preview").paginate(**self._named(repository))
        for page in pages:
            results += [preview_result_from(result) for result in page.get("previewResults", [])]
        return Preview(tuple(results), "ECR's own preview")
