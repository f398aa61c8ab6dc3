"""Semantic Versioning 2.0.0 in image tags: parsing and precedence, nothing more.

Precedence follows semver.org section 11: major, minor and patch compare numerically; a
pre-release is lower than its release; pre-release identifiers compare one by one (numeric ones
numerically, and lower than alphanumeric ones; a longer list wins when all before are equal);
build metadata is ignored. Image tags cannot contain "+", so build metadata may also be written
with "_" (Helm's convention for chart versions in OCI registries): ``v1.2.3_build.7``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

_NUMERIC = r"0|[1-9]\d*"
_PRERELEASE_ID = r"0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*"
_BUILD_ID = r"[0-9a-zA-Z-]+"
_SEMVER = re.compile(
    rf"(?P<major>{_NUMERIC})\.(?P<minor>{_NUMERIC})\.(?P<patch>{_NUMERIC})"
    rf"(?:-(?P<prerelease>(?:{_PRERELEASE_ID})(?:\.(?:{_PRERELEASE_ID}))*))?"
    rf"(?:[+_](?P<build>{_BUILD_ID}(?:\.{_BUILD_ID})*))?"
)

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


def parse_version(tag: str, prefix: str = "") -> Version | None:
    """The version a tag names (``prefix`` then strict semver), or None when it names none."""
    if not tag.startswith(prefix):
        return None
    match = _SEMVER.fullmatch(tag[len(prefix) :])
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


def highest_version(
    tags: list[str], prefix: str = "", accept: Callable[[Version], bool] = lambda _: True
) -> tuple[str, Version] | None:
    """The tag naming the highest accepted version among ``tags``; ties go to the lexically first tag."""
    best: tuple[str, Version] | None = None
    for tag in sorted(tags):
        version = parse_version(tag, prefix)
        if version is not None and accept(version) and (best is None or version.is_newer_than(best[1])):
            best = (tag, version)
    return best
