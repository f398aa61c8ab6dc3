"""Scenario files: what happened in a registry, the order EventBridge delivered it in, and what must hold after.

A scenario keeps the registry's history (``happen``) apart from the delivery of ECR's events
(``deliver``), or interleaves the two (``timeline``), so delayed, duplicated, lost and out-of-order
delivery can be written down, run by ``ecr-automation simulate`` and checked. The format is
documented in docs/scenarios.md.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from ecr_automation.local.runner import EventRouter
from ecr_automation.local.standin import (
    ACCOUNT_ID,
    LOCAL_ACCOUNT,
    LOCAL_REGION,
    REGION,
    LocalWorld,
    RegistryChange,
    RepositorySettings,
    ecr_image_action,
    synthetic_manifest,
)
from ecr_automation.models.domain import RepositoryRef, short_digest

TAG_PATTERN = r"^[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127}$"
REPOSITORY_NAME_PATTERN = r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$"
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# "111111111111/eu-west-1/team/api": how `simulate` names a repository outside the default account and region.
STATE_KEY = re.compile(r"^(?P<account>\d{12})/(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)/(?P<name>.+)$")
SHORT_DIGEST_PLACEHOLDER = re.compile(r"\{short_digest:(?P<image>[^{}]+)\}")
EVENT_KINDS = ("push", "delete", "file", "event")

Step = tuple[Literal["happen", "deliver"], str]


class ScenarioError(ValueError):
    """The file is not a valid scenario; the message is one line naming the place."""


# -- the file format ---------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExclusionFilterSpec(_Strict):
    filter: str = Field(pattern=r"^[0-9a-zA-Z._*-]{1,128}$")
    filter_type: Literal["WILDCARD"] = Field(default="WILDCARD", alias="filterType")


class RepositorySpec(_Strict):
    name: str | None = Field(default=None, pattern=REPOSITORY_NAME_PATTERN, min_length=2, max_length=256)
    account: str = Field(default=LOCAL_ACCOUNT, pattern=ACCOUNT_ID.pattern)
    region: str = Field(default=LOCAL_REGION, pattern=REGION.pattern)
    image_tag_mutability: Literal["MUTABLE", "IMMUTABLE", "MUTABLE_WITH_EXCLUSION", "IMMUTABLE_WITH_EXCLUSION"] = Field(
        default="MUTABLE", alias="imageTagMutability"
    )
    exclusion_filters: list[ExclusionFilterSpec] = Field(
        default_factory=list, alias="imageTagMutabilityExclusionFilters", max_length=5
    )

    @model_validator(mode="after")
    def _filters_only_with_exclusion(self) -> RepositorySpec:
        # ECR's own rule: the *_WITH_EXCLUSION settings need filters, the others take none.
        if self.image_tag_mutability.endswith("_WITH_EXCLUSION") != bool(self.exclusion_filters):
            raise ValueError("imageTagMutabilityExclusionFilters go with *_WITH_EXCLUSION, and only with it")
        return self


class EventSpec(_Strict):
    push: str | None = None
    delete: str | None = None
    tag: str | None = Field(default=None, pattern=TAG_PATTERN)
    image: str | None = Field(default=None, min_length=1)
    time: AwareDatetime | None = None
    file: str | None = None
    event: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> EventSpec:
        kinds = [kind for kind in EVENT_KINDS if getattr(self, kind) is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of push, delete, file, event")
        if kinds[0] in {"file", "event"} and (self.tag, self.image, self.time) != (None, None, None):
            raise ValueError(f"{kinds[0]} takes no tag, image or time: the event itself says them")
        if kinds[0] == "push" and self.image is None:
            raise ValueError("a push needs the image it pushes")
        if kinds[0] == "delete" and self.tag is None and self.image is None:
            raise ValueError("a delete names a tag, or an image to delete by digest")
        return self


class StepSpec(_Strict):
    happen: str | None = None
    deliver: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> StepSpec:
        if (self.happen is None) == (self.deliver is None):
            raise ValueError('a step is {"happen": ID} or {"deliver": ID}')
        return self


class ScenarioSpec(_Strict):
    description: str = ""
    repositories: dict[str, RepositorySpec] = Field(default_factory=dict)
    events: dict[str, EventSpec] = Field(min_length=1)
    happen: list[str] = Field(default_factory=list)
    deliver: list[str] | None = None
    timeline: list[StepSpec] | None = None
    expect: dict[str, dict[str, str | None]] = Field(default_factory=dict)
    expect_published: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    # Variables every function of the run sees (as `simulate --env`, which wins): e.g. MEMBER_ACCOUNT_EXTERNAL_ID,
    # which makes the run an organisation deployment, acting in other accounts through their member role.
    environment: dict[Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]*$")], str] = Field(default_factory=dict)


# -- a scenario, resolved ----------------------------------------------------------------------------
@dataclass(frozen=True)
class RegistryAction:
    """A push or delete: it changes the registry when it happens, and its event says so when delivered."""

    action: Literal["PUSH", "DELETE"]
    repository: RepositoryRef
    tag: str | None
    digest: str | None  # None only for a delete by tag: ECR says which image the tag was on
    time: datetime | None  # None: the moment it happens or is delivered


@dataclass(frozen=True)
class GivenEvent:
    """An event given whole (a file or inline): when it happens, the world takes the state it reports."""

    event: dict[str, Any]
    source: str


@dataclass(frozen=True)
class TagExpectation:
    repository: RepositoryRef
    where: str  # "team/api:v1.2.3", as the scenario names it
    tag: str
    digest: str | None  # None: the tag must be absent


@dataclass(frozen=True)
class Scenario:
    label: str  # the file, as given on the command line
    name: str  # prefixes the ids of the events it creates, so two scenarios in one run never share one
    description: str
    repositories: dict[RepositoryRef, RepositorySettings]
    images: dict[str, tuple[str, str]]  # symbolic name -> (manifest, digest)
    events: dict[str, RegistryAction | GivenEvent]
    steps: tuple[Step, ...]
    expect: tuple[TagExpectation, ...]
    expect_published: dict[str, int]
    environment: dict[str, str]

    @property
    def happening(self) -> frozenset[str]:
        """The events that happen in the registry; the others are only delivered."""
        return frozenset(event_id for kind, event_id in self.steps if kind == "happen")


def is_scenario(data: object) -> bool:
    """A scenario has ``events``; an EventBridge event has ``detail-type`` instead."""
    return isinstance(data, dict) and "events" in data and "detail-type" not in data


def image_manifest(name: str) -> tuple[str, str]:
    """The synthetic manifest a symbolic image name stands for, and its digest (sha256 of its bytes)."""
    manifest = synthetic_manifest(f"scenario image {name}")
    return manifest, "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()


def load_scenario(path: Path, data: object) -> Scenario:
    """Validate and resolve a scenario file's content; ``ScenarioError`` says what is wrong, in one line."""
    label = str(path)
    try:
        spec = ScenarioSpec.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "scenario"
        raise ScenarioError(f"{label}: {where}: {first['msg'].removeprefix('Value error, ')}") from None
    return _Resolver(path, label, spec).scenario()


def _needs_history(event: RegistryAction | GivenEvent) -> bool:
    """A delete by tag learns its digest from the registry when it happens; undelivered history cannot say it."""
    return isinstance(event, RegistryAction) and event.digest is None


class _Resolver:
    """Turns the file's names (repository labels, image names, event ids) into what the run needs."""

    def __init__(self, path: Path, label: str, spec: ScenarioSpec) -> None:
        self.path, self.label, self.spec = path, label, spec
        self.images: dict[str, tuple[str, str]] = {}

    def fail(self, where: str, message: str) -> ScenarioError:
        return ScenarioError(f"{self.label}: {where}: {message}")

    def scenario(self) -> Scenario:
        spec = self.spec
        repositories = {
            self.repository(label, f"repositories.{label}"): RepositorySettings(
                settings.image_tag_mutability, tuple(item.filter for item in settings.exclusion_filters)
            )
            for label, settings in spec.repositories.items()
        }
        events = {event_id: self.event(event_id, event) for event_id, event in spec.events.items()}
        steps = self.steps(events)
        return Scenario(
            label=self.label,
            name=self.path.stem,
            description=spec.description,
            repositories=repositories,
            images=self.images,
            events=events,
            steps=steps,
            expect=tuple(self.expectations()),
            expect_published=dict(spec.expect_published),
            environment=dict(spec.environment),
        )

    def repository(self, label: str, where: str) -> RepositoryRef:
        declared = self.spec.repositories.get(label)
        if declared is not None:
            reference = RepositoryRef(declared.account, declared.region, declared.name or label)
        elif match := STATE_KEY.match(label):
            reference = RepositoryRef(match["account"], match["region"], match["name"])
        else:
            reference = RepositoryRef(LOCAL_ACCOUNT, LOCAL_REGION, label)
        if not (2 <= len(reference.name) <= 256 and re.match(REPOSITORY_NAME_PATTERN, reference.name)):
            raise self.fail(where, f"{reference.name!r} is not a repository name (declare it with a name)")
        return reference

    def digest(self, image: str) -> str:
        if DIGEST.match(image):
            return image
        if image not in self.images:
            self.images[image] = image_manifest(image)
        return self.images[image][1]

    def event(self, event_id: str, spec: EventSpec) -> RegistryAction | GivenEvent:
        where = f"events.{event_id}"
        if spec.event is not None:
            return GivenEvent(spec.event, "inline")
        if spec.file is not None:
            return GivenEvent(self.read_event(spec.file, where), spec.file)
        digest = self.digest(spec.image) if spec.image is not None else None
        if spec.push is not None:
            return RegistryAction("PUSH", self.repository(spec.push, where), spec.tag, digest, spec.time)
        return RegistryAction("DELETE", self.repository(str(spec.delete), where), spec.tag, digest, spec.time)

    def read_event(self, file: str, where: str) -> dict[str, Any]:
        path = self.path.parent / file
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise self.fail(where, f"cannot read {path}: {error.strerror}") from None
        except json.JSONDecodeError as error:
            raise self.fail(where, f"{path} is not JSON: {error.msg} at line {error.lineno}") from None
        if not isinstance(data, dict):
            raise self.fail(where, f"{path} is not an event (a JSON object)")
        return data

    def steps(self, events: dict[str, RegistryAction | GivenEvent]) -> tuple[Step, ...]:
        """The timeline; ``happen`` + ``deliver`` is the timeline where all of history comes first."""
        spec = self.spec
        placed: list[tuple[str, Step]]
        if spec.timeline is not None:
            if spec.happen or spec.deliver is not None:
                raise self.fail("timeline", "give a timeline, or happen and deliver, not both")
            placed = [
                (f"timeline[{index}]", ("happen", step.happen) if step.happen else ("deliver", str(step.deliver)))
                for index, step in enumerate(spec.timeline)
            ]
        else:
            deliver = spec.happen if spec.deliver is None else spec.deliver
            placed = [(f"happen[{index}]", ("happen", event_id)) for index, event_id in enumerate(spec.happen)]
            placed += [(f"deliver[{index}]", ("deliver", event_id)) for index, event_id in enumerate(deliver)]
        if not placed:
            raise self.fail("deliver", "nothing happens and nothing is delivered")
        will_happen = {event_id for _, (kind, event_id) in placed if kind == "happen"}
        happened: set[str] = set()
        for place, (kind, event_id) in placed:
            if event_id not in events:
                raise self.fail(place, f"no event {event_id!r} (events: {', '.join(events)})")
            if kind == "happen":
                if event_id in happened:
                    raise self.fail(place, f"{event_id!r} already happened; deliver it twice instead")
                happened.add(event_id)
            elif event_id in will_happen - happened:
                raise self.fail(place, f"{event_id!r} is delivered before it happens")
            elif event_id not in will_happen and _needs_history(events[event_id]):
                raise self.fail(place, f"{event_id!r} never happens: give its image, for its event's digest")
        return tuple(step for _, step in placed)

    def expectations(self) -> list[TagExpectation]:
        expectations: list[TagExpectation] = []
        for label, tags in self.spec.expect.items():
            repository = self.repository(label, f"expect.{label}")
            for written_tag, image in tags.items():
                where = f"expect.{label}.{written_tag}"
                tag = self.placeholders_filled(written_tag, where)
                if not re.match(TAG_PATTERN, tag):
                    raise self.fail(where, f"{tag!r} is not a tag (placeholders: {{short_digest:IMAGE}})")
                digest = None if image is None else self.named(image, where)
                expectations.append(TagExpectation(repository, f"{label}:{tag}", tag, digest))
        return expectations

    def placeholders_filled(self, tag: str, where: str) -> str:
        def short(match: re.Match[str]) -> str:
            return short_digest(self.named(match["image"], where))

        return SHORT_DIGEST_PLACEHOLDER.sub(short, tag)

    def named(self, image: str, where: str) -> str:
        """An image an expectation names: a digest, or a name a push or delete of this scenario uses."""
        if DIGEST.match(image):
            return image
        if image not in self.images:
            known = ", ".join(self.images) or "none"
            raise self.fail(where, f"no image {image!r} in this scenario's events (images: {known})")
        return self.images[image][1]


# -- playing it --------------------------------------------------------------------------------------
class _Lines:
    """The scenario's own output lines, in the runner's format: one JSON object per line, ``kind`` first."""

    def __init__(self, out: TextIO, label: str) -> None:
        self._out, self._label = out, label

    def write(self, kind: str, **fields: Any) -> None:
        self._out.write(json.dumps({"kind": kind, **fields, "scenario": self._label}, default=str) + "\n")
        self._out.flush()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def play(scenario: Scenario, world: LocalWorld, router: EventRouter, out: TextIO) -> None:
    """Walk the timeline: make each change happen, deliver each event, then check what must hold.

    Mismatches go to ``router.report.errors``, one line each, like rejected events.
    """
    lines = _Lines(out, scenario.label)
    for image, (manifest, digest) in scenario.images.items():
        world.register_manifest(manifest)
        lines.write("image_named", image=image, digest=digest)
    for repository, settings in scenario.repositories.items():
        world.ensure_repository(repository, settings)
    published_before = router.report.published.copy()
    timeline = _Timeline(scenario, world, router, lines)
    for kind, event_id in scenario.steps:
        if router.stopped:
            break
        if kind == "happen":
            timeline.happen(event_id)
        else:
            timeline.deliver(event_id)
    timeline.report_lost()
    mismatches = _mismatches(scenario, world, router.report.published - published_before)
    router.report.errors.extend(mismatches)
    lines.write(
        "scenario_checked",
        expectations=len(scenario.expect) + len(scenario.expect_published),
        mismatches=len(mismatches),
    )


class _Timeline:
    def __init__(self, scenario: Scenario, world: LocalWorld, router: EventRouter, lines: _Lines) -> None:
        self.scenario, self.world, self.router, self.lines = scenario, world, router, lines
        self.emitted: dict[str, dict[str, Any]] = {}  # the event of each change, as ECR emitted it
        self.refused: set[str] = set()
        self.deliveries: Counter[str] = Counter()

    def happen(self, event_id: str) -> None:
        """Change the registry as ECR would now, and keep the event it emits for later delivery."""
        world, happening = self.world, self.scenario.events[event_id]
        if isinstance(happening, GivenEvent):
            world.apply(happening.event)
            self.emitted[event_id] = happening.event
            self.lines.write("registry_changed", event_id=event_id, source=happening.source)
            return
        at = happening.time or datetime.now(UTC)
        try:
            change = self._change(happening, at)
        except Exception as error:  # a defect of the stand-in (moto), not of the scenario: report, go on
            self.refused.add(event_id)
            reason = f"{type(error).__name__}: {error}".splitlines()[0]
            self.router.report.errors.append(f"{self.scenario.label}: {event_id}: the stand-in failed: {reason}")
            self.lines.write("step_failed", event_id=event_id, reason=reason)
            return
        description = {
            "event_id": event_id,
            "action": happening.action,
            "repository": world.state_key(happening.repository),
            "tag": happening.tag,
            "digest": change.digest,
            "time": _iso(at),
        }
        if change.refusal is not None:  # ECR emits no event for what it refused
            self.refused.add(event_id)
            self.lines.write("registry_refused", **description, reason=change.refusal)
            return
        self.emitted[event_id] = _ecr_event(self.scenario, event_id, happening, str(change.digest), at)
        self.lines.write("registry_changed", **description)

    def _change(self, happening: RegistryAction, at: datetime) -> RegistryChange:
        if happening.action == "PUSH":
            return self.world.push(happening.repository, str(happening.digest), happening.tag, at=at)
        if happening.tag is not None:
            return self.world.delete(happening.repository, tag=happening.tag)
        return self.world.delete(happening.repository, digest=happening.digest)

    def deliver(self, event_id: str) -> None:
        if event_id in self.refused:
            self.lines.write("delivery_skipped", event_id=event_id, reason="it never happened, so no event exists")
            return
        if event_id not in self.emitted:  # never happens: the first delivery fixes its id and time
            given = self.scenario.events[event_id]
            self.emitted[event_id] = (
                given.event
                if isinstance(given, GivenEvent)
                else _ecr_event(self.scenario, event_id, given, str(given.digest), given.time or datetime.now(UTC))
            )
        self.deliveries[event_id] += 1
        self.lines.write("event_delivered", event_id=event_id, delivery=self.deliveries[event_id])
        # An event that never happens reports a fact the world must now show, as in plain simulate.
        apply = None if event_id in self.scenario.happening else self.world.apply
        self.router.deliver(f"{self.scenario.label}: {event_id}", self.emitted[event_id], apply=apply)

    def report_lost(self) -> None:
        if self.router.stopped:
            return
        for event_id in self.emitted:
            if event_id not in self.deliveries:
                self.lines.write("event_lost", event_id=event_id)


def _ecr_event(scenario: Scenario, event_id: str, action: RegistryAction, digest: str, at: datetime) -> dict[str, Any]:
    event = ecr_image_action(action.repository, digest, action=action.action, tag=action.tag)
    # Readable, and the same for every delivery of it: EventBridge redelivers an event under its id.
    event["id"] = f"{scenario.name}:{event_id}"
    event["time"] = _iso(at)
    return event


def _mismatches(scenario: Scenario, world: LocalWorld, published: Counter[str]) -> list[str]:
    names = {digest: image for image, (_, digest) in scenario.images.items()}

    def described(digest: str | None) -> str:
        if digest is None:
            return "absent"
        short = f"sha256:{short_digest(digest)}"
        return f"on {names[digest]} ({short})" if digest in names else f"on {short}"

    mismatches: list[str] = []
    tags: dict[RepositoryRef, dict[str, str]] = {}
    for expected in scenario.expect:
        if expected.repository not in tags:
            tags[expected.repository] = world.tags(expected.repository) if _exists(world, expected.repository) else {}
        found = tags[expected.repository].get(expected.tag)
        if found != expected.digest:
            mismatches.append(
                f"{scenario.label}: expected {expected.where} {described(expected.digest)}, "
                f"but it is {described(found)}"
            )
    for detail_type, count in scenario.expect_published.items():
        if published[detail_type] != count:
            mismatches.append(
                f"{scenario.label}: expected {count} {detail_type!r} event(s) published, "
                f"but {published[detail_type]} were"
            )
    return mismatches


def _exists(world: LocalWorld, repository: RepositoryRef) -> bool:
    ecr = world.ecr_in(repository.region)
    try:
        ecr.describe_repositories(registryId=repository.registry_id, repositoryNames=[repository.name])
    except ecr.exceptions.RepositoryNotFoundException:
        return False
    return True
