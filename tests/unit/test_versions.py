"""The one release-version grammar: what is a release tag, and precedence (semver.org section 11)."""

from __future__ import annotations

import re
from itertools import pairwise

import pytest
import re2

from ecr_automation.models.versions import (
    MAX_TAG_LENGTH,
    RELEASE_TAG_PATTERN,
    Version,
    highest_version,
    is_release_tag,
    parse_version,
)


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("v1.2.3", Version(1, 2, 3)),
        ("1.2.3", Version(1, 2, 3)),  # the "v" is optional
        ("v0.0.0", Version(0, 0, 0)),
        ("v10.20.30", Version(10, 20, 30)),
        ("v1.2.3-rc.1", Version(1, 2, 3, ("rc", "1"))),
        ("v1.2.3-0.3.7", Version(1, 2, 3, ("0", "3", "7"))),
        ("v1.2.3-x-y-z.--", Version(1, 2, 3, ("x-y-z", "--"))),
        ("v1.2.3-0a.01a", Version(1, 2, 3, ("0a", "01a"))),  # alphanumeric identifiers may start with 0
        ("v1.2.3_build.7", Version(1, 2, 3, (), "build.7")),  # "+" written "_" (Helm's convention)
        ("v1.2.3-rc.1_0042", Version(1, 2, 3, ("rc", "1"), "0042")),  # leading zeros allowed in build
        ("v1.2.3_build.5", Version(1, 2, 3, (), "build.5")),
    ],
)
def test_parses_release_tags(tag: str, expected: Version) -> None:
    assert parse_version(tag) == expected
    assert is_release_tag(tag)


@pytest.mark.parametrize(
    "tag",
    [
        "V1.2.3",  # only a lowercase "v"
        "vv1.2.3",
        "release-1.2.3",
        "v1.2",
        "v1",
        "latest",
        "",
        "v01.2.3",  # leading zeros
        "v1.02.3",
        "v1.2.03",
        "v1.2.3-01",  # numeric pre-release identifier with a leading zero
        "v1.2.3-rc.01",
        "v1.2.3-",
        "v1.2.3-rc..1",
        "v1.2.3-rc.",
        "v1.2.3_",
        "v1.2.3_build..1",
        "v1.2.3.4",
        "v1.2.3+build.7",  # "+" is no tag character: build metadata is written "_"
        "v1.2.3-rc_1_2",  # build metadata has no "_" inside
        "v1.2.3\n",
        "v1.2.3 ",
        "v\u0661.2.3",  # an Arabic-Indic digit one: versions are ASCII
        "quarantine-0123456789ab",
        "sha-0123456789ab",
    ],
)
def test_rejects_what_is_not_a_release_tag(tag: str) -> None:
    assert parse_version(tag) is None
    assert not is_release_tag(tag)


def test_the_prefix_changes_nothing_but_the_tag() -> None:
    plain, prefixed = parse_version("1.2.3-rc.1_b.7"), parse_version("v1.2.3-rc.1_b.7")
    assert plain is not None and prefixed is not None
    assert plain == prefixed and plain.precedence == prefixed.precedence


def test_a_release_tag_is_an_image_tag_no_longer_than_ecr_allows() -> None:
    longest = "v1.2.3_" + "b" * (MAX_TAG_LENGTH - len("v1.2.3_"))
    assert is_release_tag(longest)
    assert not is_release_tag(longest + "b")
    assert parse_version("v" + "1" * 5000 + ".0.0") is None  # never reaches int()'s digit limit


def test_the_pattern_reads_the_same_in_re2() -> None:
    """The pattern is anchored and RE2-compatible: a rules file may reuse it verbatim."""
    compiled = re2.compile(RELEASE_TAG_PATTERN)
    assert set(compiled.groupindex) == {"major", "minor", "patch", "prerelease", "build"}
    for tag in ("v1.2.3-rc.1_b.7", "1.0.0", "v1.2.3-rc.01", "v1.2", "xv1.2.3", "v1.2.3x"):
        assert (compiled.search(tag) is not None) == is_release_tag(tag), tag
        assert (re.search(RELEASE_TAG_PATTERN, tag) is not None) == is_release_tag(tag), tag


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
        ("1.0.1", "v1.0.0"),  # with or without the "v"
        ("v1.0.1", "1.0.0"),
    ],
)
def test_newer(newer: str, older: str) -> None:
    new, old = parse_version(newer), parse_version(older)
    assert new is not None and old is not None
    assert new.is_newer_than(old) and not old.is_newer_than(new)


def test_build_metadata_is_ignored_for_precedence() -> None:
    first, second = parse_version("v1.2.3_build.1"), parse_version("v1.2.3_build.2")
    plain = parse_version("1.2.3")
    assert first is not None and second is not None and plain is not None
    assert first.precedence == second.precedence == plain.precedence
    assert not second.is_newer_than(first) and not first.is_newer_than(plain)
    assert first != second  # still different versions as values


def test_highest_version_ignores_other_tags_and_honours_the_filter() -> None:
    tags = ["latest", "v1", "v1.9.0", "1.10.0", "v2.0.0-rc.1", "v2.0.0-rc.01", "sha-0123456789ab"]
    assert highest_version(tags) == ("v2.0.0-rc.1", Version(2, 0, 0, ("rc", "1")))
    assert highest_version(tags, lambda v: not v.is_prerelease) == ("1.10.0", Version(1, 10, 0))
    assert highest_version(["latest", "v1"]) is None
    assert highest_version([]) is None


def test_highest_version_breaks_ties_by_the_lexically_first_tag() -> None:
    assert highest_version(iter(["v1.2.3", "v1.2.3_b.2", "1.2.3"])) == ("1.2.3", Version(1, 2, 3))


def test_str_uses_plus_for_build_metadata() -> None:
    assert str(parse_version("v1.2.3-rc.1_b.7")) == "1.2.3-rc.1+b.7"
    assert str(parse_version("1.2.3")) == "1.2.3"
