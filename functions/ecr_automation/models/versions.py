"""The one release-version grammar for image tags: what a release tag is, and how versions order.

A release tag is an optional "v", then strict Semantic Versioning 2.0.0: ``MAJOR.MINOR.PATCH``
without leading zeros, an optional pre-release (``-rc.1``; a numeric identifier has no leading
zero, so ``-rc.01`` is not a version) and optional build metadata. Image tags cannot contain "+",
so build metadata is written with "_" (Helm's convention for charts in OCI registries):
``v1.2.3_build.7``. The tag guard protects exactly these tags and retag moves aliases by exactly
these versions: both ask this module, so they cannot disagree.

Precedence follows semver.org section 11: major, minor and patch compare numerically; a
pre-release is lower than its release; pre-release identifiers compare one by one (numeric ones
numerically, and lower than alphanumeric ones; a longer list wins when all before are equal);
the "v" and build metadata are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

# ECR's limit on a tag's length. Longer text is no tag at all, and the bound keeps int() far from
# Python's limit on the digits it converts.
MAX_TAG_LENGTH = 128

# [0-9] rather than \d: Python's \d also matches non-ASCII digits, RE2's does not.
_NUMBER = r"0|[1-9][0-9]*"
_PRERELEASE_IDENTIFIER = r"0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*"
_BUILD_IDENTIFIER = r"[0-9a-zA-Z-]+"

# The grammar, once. Anchored, ASCII-only and free of lookaround and backreferences, so Python's
# re and RE2 (which matches the rules file's own patterns) read it the same way.
RELEASE_TAG_PATTERN = (
    r"^v?"
    rf"(?P<major>{_NUMBER})\.(?P<minor>{_NUMBER})\.(?P<patch>{_NUMBER})"
    rf"(?:-(?P<prerelease>(?:{_PRERELEASE_IDENTIFIER})(?:\.(?:{_PRERELEASE_IDENTIFIER}))*))?"
    rf"(?:_(?P<build>{_BUILD_IDENTIFIER}(?:\.{_BUILD_IDENTIFIER})*))?$"
)
# fullmatch, not match: Python's "$" also matches before a trailing newline.
_RELEASE_TAG = re.compile(RELEASE_TAG_PATTERN)

# One pre-release identifier's sort key: numeric identifiers sort before alphanumeric ones.
PrereleaseKey = tuple[int, int, str]
PrecedenceKey = tuple[int, int, int, int, tuple[PrereleaseKey, ...]]


@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    build: str = ""

    @property
    def is_prerelease(self) -> bool:
        return bool(self.prerelease)

    @property
    def precedence(self) -> PrecedenceKey:
        """Orders versions by semver precedence; equal keys mean equal precedence (build ignored)."""
        release_rank = 0 if self.prerelease else 1
        identifiers = tuple(
            (0, int(identifier), "") if identifier.isdigit() else (1, 0, identifier) for identifier in self.prerelease
        )
        return (self.major, self.minor, self.patch, release_rank, identifiers)

    def is_newer_than(self, other: Version) -> bool:
        return self.precedence > other.precedence

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(self.prerelease)
        return text + (f"+{self.build}" if self.build else "")


def parse_version(tag: str) -> Version | None:
    """The version a release tag names (``1.2.3`` and ``v1.2.3`` name the same), or None for any other tag."""
    if len(tag) > MAX_TAG_LENGTH:
        return None
    match = _RELEASE_TAG.fullmatch(tag)
    if match is None:
        return None
    prerelease = match["prerelease"]
    return Version(
        major=int(match["major"]),
        minor=int(match["minor"]),
        patch=int(match["patch"]),
        prerelease=tuple(prerelease.split(".")) if prerelease else (),
        build=match["build"] or "",
    )


def is_release_tag(tag: str) -> bool:
    """Whether ``tag`` names a release version: the tags the guard protects by default."""
    return parse_version(tag) is not None


def highest_version(
    tags: Iterable[str], accept: Callable[[Version], bool] = lambda _: True
) -> tuple[str, Version] | None:
    """The tag naming the highest accepted version among ``tags``; ties go to the lexically first tag."""
    best: tuple[str, Version] | None = None
    for tag in sorted(tags):
        version = parse_version(tag)
        if version is not None and accept(version) and (best is None or version.is_newer_than(best[1])):
            best = (tag, version)
    return best
