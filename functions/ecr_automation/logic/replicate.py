"""Replication: which images go where (``plan``), and the worker's workflow for one job (``Replicator``).

The planner turns a push (or, for scan-gated rules, a completed scan) into one ``ReplicationJob`` per
image tag and target; the jobs travel through SQS to the worker, which copies each with every digest
preserved and says what happened on the bus (``Image Replicated`` / ``Image Replication Failed``).

- **Every matching ``[[replicate]]`` entry applies**, each with its own targets and tag filters.
- **Never a push the tag guard rejected**: a push-gated rule asks the same ``ClaimAcceptance`` port retag
  uses. A scan-gated rule replicates on a completed scan with nothing at or above its ``block_at``.
- **A protected tag is never overwritten at the destination**: when the destination repository's guard
  rule protects the tag and it already names another digest there, the copy leaves it and the job ends
  in ``Image Replication Failed`` naming the conflict.
- **Deletes are not propagated** (as with ECR's native replication): a tag or image deleted at the
  source stays at every destination until removed there.
- **Idempotent**: a job's id is derived from the source digest, the tag and the target, so duplicate
  deliveries plan the same job, and copying again costs HEAD requests (and one manifest PUT for a tag
  that arrives later for a digest already copied).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from ecr_automation.logic.ownership import is_guarded
from ecr_automation.logic.platforms import combined_counts, gate_closed
from ecr_automation.logic.ports import ImageGraph, Publisher, Registry
from ecr_automation.models.domain import ImageManifest, RepositoryRef, short_digest
from ecr_automation.models.events.base import AccountId, Digest, ImageTag, RepositoryName, SeverityCounts
from ecr_automation.models.events.image_action import ImageActionEvent, ImageActionType
from ecr_automation.models.events.scans import ImageScanEvent, InspectorScanEvent
from ecr_automation.rules import ReplicateRule, ReplicationTarget, RepositorySettings, Rules, render_repository

ReplicateEvent = ImageActionEvent | ImageScanEvent | InspectorScanEvent

IMAGE_REPLICATED = "Image Replicated"
IMAGE_REPLICATION_FAILED = "Image Replication Failed"


# -- the job: what travels through the queue ---------------------------------------------------------
class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageSource(_Message):
    account: AccountId
    region: str = Field(min_length=1)
    repository: RepositoryName
    digest: Digest
    tag: ImageTag


class EcrDestination(_Message):
    kind: Literal["ecr"] = "ecr"
    account: AccountId
    region: str = Field(min_length=1)
    repository: RepositoryName
    # Assumed through STS to reach another account's registry; None for the function's own account.
    role_arn: str | None = None

    def describe(self) -> str:
        return f"{self.account}.dkr.ecr.{self.region}/{self.repository}"


class RegistryDestination(_Message):
    kind: Literal["registry"] = "registry"
    url: str = Field(min_length=1)
    repository: RepositoryName
    # Where the registry's credentials are (a Secrets Manager secret), never the credentials themselves.
    credentials_secret: str | None = None

    def describe(self) -> str:
        return f"{self.url.rstrip('/')}/{self.repository}"


Destination = Annotated[EcrDestination | RegistryDestination, Field(discriminator="kind")]


class ReplicationJob(_Message):
    """One image tag to copy to one destination; JSON through SQS, the same for every duplicate delivery."""

    job_id: str = Field(pattern=r"^[0-9a-f]{64}$")
    source: ImageSource
    destination: Destination
    referrers: bool = False
    # How to create a missing destination ECR repository; None for other registries.
    create_repository: RepositorySettings | None = None
    # The event that planned the job, for tracing (not part of the id: duplicates plan one job).
    planned_by: str = ""

    def summary(self) -> dict[str, str]:
        """What logs and effects say of a job: its id, its tag and where it goes."""
        return {"job_id": self.job_id, "tag": self.source.tag, "destination": self.destination.describe()}


def job_id_of(source: ImageSource, destination: EcrDestination | RegistryDestination) -> str:
    """sha256 of the source digest, the tag and the target: stable across deliveries and processes."""
    material = "\n".join([source.digest, source.tag, destination.model_dump_json()])
    return hashlib.sha256(material.encode()).hexdigest()


# -- planning ----------------------------------------------------------------------------------------
class PushAcceptance(Protocol):
    """Whether other reactions may act on a push: False when the tag guard rejects it (``ClaimAcceptance``)."""

    def accepts(self, event: ImageActionEvent) -> bool: ...


@dataclass(frozen=True)
class ReplicationPlan:
    jobs: list[ReplicationJob] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PlatformScans:
    """What the scan gate needs for a multi-arch image: which indexes name a platform, and their scans."""

    registry: Registry
    graph: ImageGraph


def plan(
    event: ReplicateEvent, rules: Rules, acceptance: PushAcceptance, platforms: PlatformScans | None = None
) -> ReplicationPlan:
    """The jobs an event asks for, and why it asks for no more (a rejected push, a dirty scan, a filtered tag)."""
    if isinstance(event, ImageActionEvent):
        return _plan_push(event, rules, acceptance)
    return _plan_scan(event, rules, platforms)


def _plan_push(event: ImageActionEvent, rules: Rules, acceptance: PushAcceptance) -> ReplicationPlan:
    detail = event.detail
    repository = detail.repository_name
    tag = detail.image_tag
    if (why_not := _push_not_replicated(event, rules)) is not None or tag is None:
        return ReplicationPlan(notes=[why_not or "push by digest"])
    rules_on_push = [rule for rule in rules.replicate_for(repository) if rule.gate == "push"]
    if not rules_on_push:
        return ReplicationPlan(notes=[f"no push-gated replicate rule for {repository}"])
    notes: list[str] = []
    wanted = [rule for rule in rules_on_push if _tag_allowed(rule, tag, notes)]
    if not wanted:
        return ReplicationPlan(notes=notes)
    # Asked only once a rule wants the push: the question may cost a ledger write.
    if not acceptance.accepts(event):
        return ReplicationPlan(notes=[*notes, f"the tag guard rejected this push of {tag}: not replicated"])
    source = ImageSource(
        account=event.account, region=event.region, repository=repository, digest=detail.image_digest, tag=tag
    )
    return _jobs_for(source, wanted, event.id, notes)


def _push_not_replicated(event: ImageActionEvent, rules: Rules) -> str | None:
    """Why this image action is no push to replicate, or None when it may be one."""
    detail = event.detail
    if detail.known_action is not ImageActionType.PUSH:
        return f"action {detail.action_type} is not replicated (deletes never are)"
    if detail.image_tag is None:
        return "push by digest: nothing to replicate on its own (a tagged index brings its platform manifests)"
    guard = rules.guard_for(detail.repository_name)
    if guard is not None and guard.is_quarantine_tag(detail.image_tag):
        return f"{detail.image_tag} is the tag guard's quarantine tag: not replicated"
    return None


def _plan_scan(
    event: ImageScanEvent | InspectorScanEvent, rules: Rules, platforms: PlatformScans | None
) -> ReplicationPlan:
    detail = event.detail
    repository = detail.repository_name
    gated = [rule for rule in rules.replicate_for(repository) if rule.gate == "scan"]
    if not gated:
        return ReplicationPlan(notes=[f"no scan-gated replicate rule for {repository}"])
    if not detail.complete:
        return ReplicationPlan(notes=[f"scan {detail.scan_status}: nothing replicated"])
    if not detail.image_tags:
        # Scans name platform manifests: a clean one may complete the scans of the index that names it.
        return _plan_indexes(event, rules, gated, platforms)
    notes: list[str] = []
    clean = _clean_rules(gated, detail.finding_severity_counts, notes, inspector=isinstance(event, InspectorScanEvent))
    return _plan_tags(event, rules, clean, digest=detail.image_digest, tags=detail.image_tags, notes=notes)


def _plan_indexes(
    event: ImageScanEvent | InspectorScanEvent,
    rules: Rules,
    gated: list[ReplicateRule],
    platforms: PlatformScans | None,
) -> ReplicationPlan:
    detail = event.detail
    note = "the scanned image has no tag (a platform manifest?)"
    if platforms is None:
        return ReplicationPlan(notes=[f"{note}: nothing to replicate"])
    repository = RepositoryRef(event.account, event.region, detail.repository_name)
    indexes = platforms.graph.parents_of(repository, detail.image_digest)
    if not indexes:
        return ReplicationPlan(notes=[f"{note} and no index names it: nothing to replicate"])
    notes: list[str] = []
    jobs: list[ReplicationJob] = []
    manifests = platforms.registry.get_manifests(repository, indexes)
    tags_of = platforms.registry.tags_of_digests(repository, indexes)
    for index in indexes:
        manifest = manifests.get(index)
        if not isinstance(manifest, ImageManifest):
            notes.append(f"index {short_digest(index)} cannot be read: not replicated")
            continue
        reported = (detail.image_digest, detail.finding_severity_counts)
        counts = combined_counts(platforms.registry, repository, manifest, reported)
        if isinstance(counts, str):
            notes.append(f"index {short_digest(index)}: {counts}; not replicated yet")
            continue
        # A platform's counts come from DescribeImageScanFindings, which has every severity.
        clean = _clean_rules(gated, counts, notes, inspector=False)
        jobs.extend(_plan_tags(event, rules, clean, digest=index, tags=tags_of.get(index, []), notes=notes).jobs)
    return ReplicationPlan(_unique(jobs), notes)


def _clean_rules(
    gated: list[ReplicateRule], counts: SeverityCounts, notes: list[str], *, inspector: bool
) -> list[ReplicateRule]:
    """The gated rules this scan lets through: nothing at or above their ``block_at``."""
    clean: list[ReplicateRule] = []
    for rule in gated:
        if (closed := gate_closed(counts, rule.block_at, inspector_counts=inspector)) is not None:
            notes.append(f"{closed}: not replicated")
        else:
            clean.append(rule)
    return clean


def _plan_tags(
    event: ImageScanEvent | InspectorScanEvent,
    rules: Rules,
    clean: list[ReplicateRule],
    *,
    digest: str,
    tags: Iterable[str],
    notes: list[str],
) -> ReplicationPlan:
    repository = event.detail.repository_name
    guard = rules.guard_for(repository)
    jobs: list[ReplicationJob] = []
    for tag in tags:
        if guard is not None and guard.is_quarantine_tag(tag):
            notes.append(f"{tag} is the tag guard's quarantine tag: not replicated")
            continue
        wanted = [rule for rule in clean if _tag_allowed(rule, tag, notes)]
        source = ImageSource(account=event.account, region=event.region, repository=repository, digest=digest, tag=tag)
        jobs.extend(_jobs_for(source, wanted, event.id, notes).jobs)
    return ReplicationPlan(_unique(jobs), notes)


def _tag_allowed(rule: ReplicateRule, tag: str, notes: list[str]) -> bool:
    if rule.replicates_tag(tag):
        return True
    notes.append(f"{tag} is filtered out by a rule's tags_allow/tags_deny ({', '.join(rule.repositories)})")
    return False


def _jobs_for(source: ImageSource, wanted: list[ReplicateRule], event_id: str, notes: list[str]) -> ReplicationPlan:
    jobs: list[ReplicationJob] = []
    for rule in wanted:
        for target in rule.targets:
            destination = destination_of(target, source)
            if destination is None:
                notes.append(f"{target.repository!r} renders no valid repository name from {source.repository}")
                continue
            if _is_the_source(destination, source):
                notes.append(f"{destination.describe()} is the source itself: skipped")
                continue
            jobs.append(
                ReplicationJob(
                    job_id=job_id_of(source, destination),
                    source=source,
                    destination=destination,
                    referrers=rule.referrers,
                    create_repository=target.create_repository if target.is_ecr else None,
                    planned_by=event_id,
                )
            )
    return ReplicationPlan(_unique(jobs), notes)


def destination_of(target: ReplicationTarget, source: ImageSource) -> EcrDestination | RegistryDestination | None:
    repository = render_repository(target.repository, source.repository)
    if repository is None:
        return None
    if target.registry is not None:
        return RegistryDestination(
            url=target.registry.rstrip("/"), repository=repository, credentials_secret=target.credentials_secret
        )
    return EcrDestination(
        account=target.destination_account or source.account,
        region=target.region or source.region,
        repository=repository,
        role_arn=target.role_arn,
    )


def _is_the_source(destination: EcrDestination | RegistryDestination, source: ImageSource) -> bool:
    return isinstance(destination, EcrDestination) and (
        destination.account,
        destination.region,
        destination.repository,
    ) == (source.account, source.region, source.repository)


def _unique(jobs: list[ReplicationJob]) -> list[ReplicationJob]:
    """One job per id: two rules naming the same target and tag copy once."""
    return list({job.job_id: job for job in jobs}.values())


# -- the worker ------------------------------------------------------------------------------------------
class CopyFailedError(Exception):
    """Copying cannot succeed as things are (a missing source image, a refused credential, a corrupt blob)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CopyPausedError(Exception):
    """The deadline came before the copy finished; running the job again resumes it."""


@dataclass(frozen=True)
class CopyOutcome:
    digest: str
    blobs_copied: int = 0
    blobs_skipped: int = 0
    bytes_copied: int = 0
    manifests_copied: int = 0
    tags_written: list[str] = field(default_factory=list)
    # Protected tags that name another digest at the destination: left as they are.
    tag_conflicts: list[str] = field(default_factory=list)
    seconds: float = 0.0


TagProtection = Callable[[str], bool]


class ImageCopier(Protocol):
    def copy(self, job: ReplicationJob, *, deadline: float | None, protected: TagProtection) -> CopyOutcome:
        """Copy the job's image; raises ``CopyFailedError`` (permanent) or ``CopyPausedError`` (resume later).

        ``deadline`` is a ``time.monotonic()`` instant.
        """


class DestinationRepositories(Protocol):
    def ensure_repository(self, job: ReplicationJob) -> bool:
        """Create the job's destination ECR repository with its settings when missing; True when created."""


class ReplicationResult(StrEnum):
    REPLICATED = "replicated"
    CONFLICT = "conflict"  # copied, but a protected tag at the destination names another digest


@dataclass(frozen=True)
class ReplicationOutcome:
    result: ReplicationResult
    job: ReplicationJob
    copy: CopyOutcome
    repository_created: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "result": self.result.value,
            "job_id": self.job.job_id,
            "destination": self.job.destination.describe(),
            "digest": self.copy.digest,
            "tags_written": self.copy.tags_written,
            "tag_conflicts": self.copy.tag_conflicts,
            "bytes_copied": self.copy.bytes_copied,
            "blobs_copied": self.copy.blobs_copied,
            "blobs_skipped": self.copy.blobs_skipped,
            "repository_created": self.repository_created,
        }


class Replicator:
    """Runs one job: the destination repository, the copy, then one event saying how it went."""

    def __init__(
        self,
        rules: Rules,
        copier: ImageCopier,
        destinations: DestinationRepositories,
        publisher: Publisher,
    ) -> None:
        self._rules = rules
        self._copier = copier
        self._destinations = destinations
        self._publisher = publisher

    def replicate(self, job: ReplicationJob, *, deadline: float | None, final_attempt: bool) -> ReplicationOutcome:
        """Copy ``job``; a failure raises so the message is redelivered.

        ``Image Replication Failed`` is published for a failure only on the ``final_attempt`` (the message
        goes to the dead-letter queue next), so a job retried to success raises no false alarm and a
        failing one exactly one. A conflict is final at once: reported, and the message is done.
        """
        try:
            created = False
            if isinstance(job.destination, EcrDestination) and job.create_repository is not None:
                created = self._destinations.ensure_repository(job)
            copied = self._copier.copy(job, deadline=deadline, protected=self._protection(job))
        except CopyPausedError:
            raise  # not a failure: the retry resumes where this one stopped
        except CopyFailedError as error:
            if final_attempt:
                self._publish_failure(job, error.reason)
            raise
        except Exception as error:
            if final_attempt:
                self._publish_failure(job, f"{type(error).__name__}: {error}"[:1000])
            raise
        if copied.digest != job.source.digest:
            reason = f"the copy produced {copied.digest}, not the source's {job.source.digest}"
            if final_attempt:
                self._publish_failure(job, reason)
            raise CopyFailedError(reason)
        if copied.tag_conflicts:
            conflicts = ", ".join(copied.tag_conflicts)
            reason = f"protected tag(s) {conflicts} name another digest at the destination: left as they are"
            self._publish_failure(job, reason, conflicts=copied.tag_conflicts, copied=copied)
            return ReplicationOutcome(ReplicationResult.CONFLICT, job, copied, created)
        self._publisher.publish(IMAGE_REPLICATED, {**self._detail(job), **_copy_detail(job, copied)})
        return ReplicationOutcome(ReplicationResult.REPLICATED, job, copied, created)

    def _protection(self, job: ReplicationJob) -> TagProtection:
        """The destination repository's guard rule, as this rules file states it."""
        guard = self._rules.guard_for(job.destination.repository)
        return lambda tag: is_guarded(guard, tag)

    def _publish_failure(
        self, job: ReplicationJob, reason: str, *, conflicts: list[str] | None = None, copied: CopyOutcome | None = None
    ) -> None:
        detail: dict[str, Any] = {**self._detail(job), "reason": reason}
        if conflicts:
            detail["conflicts"] = conflicts
        if copied is not None:
            detail.update(_copy_detail(job, copied))
        self._publisher.publish(IMAGE_REPLICATION_FAILED, detail)

    @staticmethod
    def _detail(job: ReplicationJob) -> dict[str, Any]:
        source = job.source
        return {
            "job-id": job.job_id,
            "source": {
                "account": source.account,
                "region": source.region,
                "repository-name": source.repository,
                "image-tag": source.tag,
            },
            "destination": job.destination.model_dump(mode="json", exclude={"credentials_secret"}),
            "image-digest": source.digest,
        }


def _copy_detail(job: ReplicationJob, copied: CopyOutcome) -> dict[str, Any]:
    return {
        # The tags that name the image at the destination now; those this copy wrote (none when in place).
        "tags": [tag for tag in [job.source.tag] if tag not in copied.tag_conflicts],
        "tags-written": copied.tags_written,
        "bytes-copied": copied.bytes_copied,
        "blobs-copied": copied.blobs_copied,
        "blobs-skipped": copied.blobs_skipped,
        "seconds": copied.seconds,
    }
