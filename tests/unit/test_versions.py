"""Semver in image tags: what parses, and precedence (semver.org section 11)."""

from __future__ import annotations

from itertools import pairwise

import pytest

from ecr_automation.logic.versions import Version, highest_version, parse_version


@pytest.mark.parametrize(
    ("tag", "prefix", "expected"),
    [
        ("v1.2.3", "v", Version(1, 2, 3)),
        ("1.2.3", "", Version(1, 2, 3)),
        ("release-10.0.1", "release-", Version(10, 0, 1)),
        ("v1.2.3-rc.1", "v", Version(1, 2, 3, ("rc", "1"))),
        ("v1.2.3-0.3.7", "v", Version(1, 2, 3, ("0", "3", "7"))),
        ("v1.2.3-x-y-z.--", "v", Version(1, 2, 3, ("x-y-z", "--"))),
        ("v1.2.3_build.7", "v", Version(1, 2, 3, (), "build.7")),  # "+" written "_" (Helm's convention)
        ("v1.2.3+build.7", "v", Version(1, 2, 3, (), "build.7")),
        ("v1.2.3-rc.1_0042", "v", Version(1, 2, 3, ("rc", "1"), "0042")),  # leading zeros allowed in build
    ],
)
def test_parses_semver_tags(tag: str, prefix: str, expected: Version) -> None:
    assert parse_version(tag, prefix) == expected


@pytest.mark.parametrize(
    ("tag", "prefix"),
    [
        ("1.2.3", "v"),  # prefix required
        ("v1.2.3", ""),  # and exact
        ("V1.2.3", "v"),
        ("v1.2", "v"),
        ("v1", "v"),
        ("latest", "v"),
        ("v01.2.3", "v"),  # leading zeros
        ("v1.02.3", "v"),
        ("v1.2.3-01", "v"),  # numeric pre-release identifier with a leading zero
        ("v1.2.3-", "v"),
        ("v1.2.3-rc..1", "v"),
        ("v1.2.3_", "v"),
        ("v1.2.3.4", "v"),
        ("v1.2.3-rc_1_2", "v"),  # build metadata has no "_" inside
    ],
)
def test_rejects_what_is_not_semver(tag: str, prefix: str) -> None:
    assert parse_version(tag, prefix) is None


def test_precedence_follows_the_semver_spec_example() -> None:
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
        "1.1.0",
        "2.0.0",
    ]
    versions = [parse_version(tag) for tag in ordered]
    assert all(version is not None for version in versions)
    for lower, higher in pairwise(versions):
        assert higher is not None and lower is not None
        assert higher.is_newer_than(lower)
        assert not lower.is_newer_than(higher)


@pytest.mark.parametrize(
    ("newer", "older"),
    [
        ("v1.10.0", "v1.9.0"),  # numeric, not lexical
        ("v1.0.10", "v1.0.9"),
        ("v10.0.0", "v9.9.9"),
        ("v1.0.0-rc.10", "v1.0.0-rc.9"),
        ("v1.0.0-rc.a", "v1.0.0-rc.10"),  # alphanumeric identifiers rank above numeric ones
        ("v1.0.0", "v1.0.0-rc.99"),  # a release ranks above its pre-releases
        ("v1.0.1-alpha", "v1.0.0"),
    ],
)
def test_newer(newer: str, older: str) -> None:
    new, old = parse_version(newer, "v"), parse_version(older, "v")
    assert new is not None and old is not None
    assert new.is_newer_than(old) and not old.is_newer_than(new)


def test_build_metadata_is_ignored_for_precedence() -> None:
    first, second = parse_version("v1.2.3_build.1", "v"), parse_version("v1.2.3_build.2", "v")
    plain = parse_version("v1.2.3", "v")
    assert first is not None and second is not None and plain is not None
    assert first.precedence == second.precedence == plain.precedence
    assert not second.is_newer_than(first) and not first.is_newer_than(plain)
    assert first != second  # still different versions as values


def test_highest_version_ignores_other_tags_and_honours_the_filter() -> None:
    tags = ["latest", "v1", "v1.9.0", "v1.10.0", "v2.0.0-rc.1", "sha-0123456789ab"]
    assert highest_version(tags, "v") == ("v2.0.0-rc.1", Version(2, 0, 0, ("rc", "1")))
    assert highest_version(tags, "v", lambda v: not v.is_prerelease) == ("v1.10.0", Version(1, 10, 0))
    assert highest_version(["latest", "v1"], "v") is None


def test_str_uses_plus_for_build_metadata() -> None:
    assert str(parse_version("v1.2.3-rc.1_b.7", "v")) == "1.2.3-rc.1+b.7"
