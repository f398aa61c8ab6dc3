"""What every event model shares: ECR's value constraints, severities, the detail base, the envelope.

Powertools ships no ECR model, so the events extend its ``EventBridgeModel`` with a typed ``detail``.
They normalise what AWS makes awkward: Inspector2 Scan names the repository by ARN, severity
counts omit zero keys, and Inspector timestamps are not ISO 8601.

Cold start: the models defer building their validators (``defer_build``); each handler builds those of
the events it accepts at init (``parsing.build_models``), so no function builds the others'. Annotations
are plain (no ``from __future__ import annotations``): pydantic would compile every one of them from a string.
"""

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

# ECR's own constraints (CreateRepository / PutImage API reference).
REPOSITORY_NAME_PATTERN = r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$"

IMAGE_TAG_PATTERN = r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$"

DIGEST_PATTERN = r"^sha256:[a-f0-9]{64}$"

REPOSITORY_ARN_PATTERN = re.compile(
    r"^arn:aws[a-z-]*:ecr:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):repository/(?P<name>.+)$"
)

RepositoryName = Annotated[str, StringConstraints(min_length=2, max_length=256, pattern=REPOSITORY_NAME_PATTERN)]

ImageTag = Annotated[str, StringConstraints(pattern=IMAGE_TAG_PATTERN)]

Digest = Annotated[str, StringConstraints(pattern=DIGEST_PATTERN)]

AccountId = Annotated[str, StringConstraints(pattern=r"^\d{12}$")]

# Inspector's documented samples use these non-ISO forms besides ISO 8601.
_INSPECTOR_TIME_FORMATS = (
    "%b %d, %Y, %I:%M:%S %p",  # Dec 3, 2021, 6:02:30 PM
    "%a %b %d %H:%M:%S.%f UTC %Y",  # Wed Sep 04 16:55:38.411 UTC 2024
    "%a %b %d %H:%M:%S UTC %Y",
)


def _parse_inspector_time(value: object) -> object:
    if not isinstance(value, str):
        return value
    for time_format in _INSPECTOR_TIME_FORMATS:
        try:
            return datetime.strptime(value, time_format).replace(tzinfo=UTC)
        except ValueError:
            continue
    return value  # let pydantic try ISO 8601 and report the failure with the field name


def _assume_utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


InspectorTime = Annotated[datetime, BeforeValidator(_parse_inspector_time), AfterValidator(_assume_utc)]

# EventBridge always sends UTC with a "Z"; a time without a zone is read as UTC, never compared naive.
AwareTime = Annotated[datetime, AfterValidator(_assume_utc)]


def repository_name_from_arn(value: object) -> object:
    if isinstance(value, str) and (match := REPOSITORY_ARN_PATTERN.match(value)):
        return match["name"]
    return value


class Severity(StrEnum):
    CRITICAL = "CRITICAL"
    HIGH = "HIGH"
    MEDIUM = "MEDIUM"
    LOW = "LOW"
    INFORMATIONAL = "INFORMATIONAL"
    UNDEFINED = "UNDEFINED"

    @property
    def rank(self) -> int:
        """Higher is worse; UNDEFINED ranks with INFORMATIONAL."""
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {
    Severity.CRITICAL: 5,
    Severity.HIGH: 4,
    Severity.MEDIUM: 3,
    Severity.LOW: 2,
    Severity.INFORMATIONAL: 1,
    Severity.UNDEFINED: 1,
}


class Detail(BaseModel):
    # AWS adds fields over time: unknown ones are tolerated and dropped.
    # Built on first use (or by the handler that reads them, at init): a function builds the few it reads.
    model_config = ConfigDict(populate_by_name=True, frozen=True, extra="ignore", defer_build=True)


NonNegative = Annotated[int, Field(ge=0, strict=True)]


class SeverityCounts(Detail):
    """Finding counts per severity; a missing key means zero (AWS omits zero counts)."""

    critical: NonNegative = Field(default=0, alias="CRITICAL")
    high: NonNegative = Field(default=0, alias="HIGH")
    medium: NonNegative = Field(default=0, alias="MEDIUM")
    low: NonNegative = Field(default=0, alias="LOW")
    informational: NonNegative = Field(default=0, alias="INFORMATIONAL")
    undefined: NonNegative = Field(default=0, alias="UNDEFINED")

    def count(self, severity: Severity) -> int:
        return int(getattr(self, severity.value.lower()))

    @property
    def total(self) -> int:
        return sum(self.count(severity) for severity in Severity)

    def at_or_above(self, threshold: Severity) -> int:
        return sum(self.count(severity) for severity in Severity if severity.rank >= threshold.rank)

    def as_dict(self) -> dict[str, int]:
        return {severity.value: self.count(severity) for severity in Severity if self.count(severity)}


class Envelope(EventBridgeModel):
    """The envelope every event this application reads shares; subclasses pin the source."""

    model_config = ConfigDict(populate_by_name=True, frozen=True, defer_build=True)
    account: AccountId
    region: str = Field(min_length=1)
    time: AwareTime

    def ignore_reason(self) -> str | None:
        """Why this well-formed event is deliberately left alone (``parsing.parse_event``); None to process it."""
        return None


class EcrEnvelope(Envelope):
    source: Literal["aws.ecr"]


class InspectorEnvelope(Envelope):
    source: Literal["aws.inspector2"]


class ApplicationEnvelope(Envelope):
    source: Literal["ecr-automation"]
