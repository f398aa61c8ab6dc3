"""The rules file: one release grammar for the guard, fail-closed quarantine tags, linear-time patterns."""

from __future__ import annotations

import re

import pytest
import re2
from hypothesis import given, settings
from hypothesis import strategies as st

from ecr_automation.config import BUNDLED_RULES_FILE, ConfigurationError
from ecr_automation.models.events.base import IMAGE_TAG_PATTERN
from ecr_automation.models.versions import MAX_TAG_LENGTH, RELEASE_TAG_PATTERN, parse_version
from ecr_automation.rules import GuardRule, PatternRule, load_rules, parse_rules

BUNDLED_GUARD = load_rules(BUNDLED_RULES_FILE).guard_for("team/web")
DIGEST = "sha256:" + "0123456789abcdef" * 4


def guard_from(toml: str) -> GuardRule:
    rule = parse_rules(toml).guard_for("any")
    assert rule is not None
    return rule


def refusal(toml: str) -> str:
    with pytest.raises(ConfigurationError) as error:
        parse_rules(toml, origin="rules.toml")
    message = str(error.value)
    assert "\n" not in message
    return message


# --- the guard protects exactly the release grammar ---------------------------------------------

_numbers = st.one_of(
    st.integers(min_value=0, max_value=10**12).map(str),
    st.from_regex(r"0[0-9]{1,3}", fullmatch=True),  # leading zeros: never a version
)
_identifiers = st.one_of(_numbers, st.from_regex(r"[0-9a-zA-Z-]{0,6}", fullmatch=True))  # "" is an invalid one
_semver_ish_tags = st.builds(
    lambda prefix, core, prerelease, build: prefix + ".".join(core) + prerelease + build,
    st.sampled_from(["", "v", "V", "vv", "release-", "v-"]),
    st.lists(_numbers, min_size=2, max_size=4),
    st.one_of(st.just(""), st.lists(_identifiers, min_size=1, max_size=3).map(lambda ids: "-" + ".".join(ids))),
    st.one_of(
        st.just(""),
        st.builds(
            lambda separator, ids: separator + ".".join(ids),
            st.sampled_from(["_", "+", "-", ".", "__"]),
            st.lists(_identifiers, min_size=1, max_size=3),
        ),
    ),
)
_any_tags = st.from_regex(IMAGE_TAG_PATTERN, fullmatch=True)
_near_miss_tags = st.text(alphabet="v0123456789.-_a+", max_size=24)
tags = st.one_of(_semver_ish_tags, _any_tags, _near_miss_tags)


@settings(database=None, max_examples=500)
@given(tags)
def test_a_tag_is_protected_exactly_when_it_is_a_release_version(tag: str) -> None:
    is_version = parse_version(tag) is not None
    assert GuardRule().is_protected(tag) == is_version
    assert BUNDLED_GUARD is not None
    exempt = any(re2.search(pattern, tag) for pattern in BUNDLED_GUARD.mutable)
    assert BUNDLED_GUARD.is_protected(tag) == (is_version and not exempt)


@settings(database=None, max_examples=500)
@given(tags)
def test_re2_and_python_read_the_release_pattern_alike(tag: str) -> None:
    expected = parse_version(tag) is not None if len(tag) <= MAX_TAG_LENGTH else None
    if expected is not None:
        assert (re2.search(RELEASE_TAG_PATTERN, tag) is not None) == expected
        assert (re.fullmatch(RELEASE_TAG_PATTERN, tag) is not None) == expected


@pytest.mark.parametrize(
    ("tag", "protected"),
    [
        ("v1.2.3", True),
        ("1.2.3", True),  # protected and a version: moves aliases too
        ("v1.2.3_build.5", True),  # a version: so protected too
        ("v1.2.3-rc.1", True),
        ("v1.2.3-rc.01", False),  # not SemVer: so neither a version nor protected
        ("v1.2", False),
        ("latest", False),
        ("quarantine-0123456789ab", False),
    ],
)
def test_the_default_guard_agrees_with_the_grammar(tag: str, protected: bool) -> None:
    assert GuardRule().is_protected(tag) is protected
    assert (parse_version(tag) is not None) is protected


def test_extra_patterns_add_protection_and_mutable_exceptions_win() -> None:
    rule = guard_from("[[guard]]\nprotected = ['^release-']\nmutable = ['^v1\\.2\\.3$', '-snapshot$']\n")
    assert rule.is_protected("release-7")
    assert rule.is_protected("v2.0.0")
    assert not rule.is_protected("v1.2.3")
    assert not rule.is_protected("release-7-snapshot")
    assert not rule.is_protected("nightly")


def test_release_protection_can_be_turned_off() -> None:
    rule = guard_from("[[guard]]\nprotect_releases = false\nprotected = ['^stable$']\n")
    assert not rule.is_protected("v1.2.3")
    assert rule.is_protected("stable")


def test_the_guards_own_quarantine_tags_are_never_protected() -> None:
    rule = guard_from("[[guard]]\nprotected = ['.']\nquarantine_tag = 'held-{short_digest}'\n")
    assert not rule.is_protected("held-0123456789ab")
    assert rule.is_protected("held-0123456789")  # not what the template renders


def test_the_bundled_rules_file_protects_through_the_grammar() -> None:
    assert BUNDLED_GUARD is not None
    assert BUNDLED_GUARD.protect_releases
    assert BUNDLED_GUARD.protected == []


# --- quarantine tags: validated fail-closed at load ----------------------------------------------


def test_quarantine_tag_renders_the_first_12_hex_characters_of_the_digest() -> None:
    rule = GuardRule()
    assert rule.quarantine_tag_for(DIGEST) == "quarantine-0123456789ab"
    assert rule.is_quarantine_tag("quarantine-0123456789ab")
    assert rule.is_quarantine_tag(rule.quarantine_tag_for("sha256:" + "f" * 64))
    for tag in ("quarantine-0123456789a", "quarantine-0123456789abc", "quarantine-0123456789AB", "x-quarantine-"):
        assert not rule.is_quarantine_tag(tag), tag


def test_quarantine_tag_templates_may_put_the_digest_anywhere() -> None:
    rule = guard_from("[[guard]]\nquarantine_tag = '{short_digest}.held'\n")
    assert rule.quarantine_tag_for(DIGEST) == "0123456789ab.held"
    assert rule.is_quarantine_tag("0123456789ab.held")
    assert not rule.is_quarantine_tag("0123456789abXheld")  # the "." is literal


def test_quarantine_tag_for_refuses_what_is_not_a_digest() -> None:
    with pytest.raises(ValueError, match="not an image digest"):
        GuardRule().quarantine_tag_for("sha256:0123")


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("quarantine-{when}", "unknown placeholder {when}"),
        ("quarantine-{short_digest}-{when}", "unknown placeholder {when}"),
        ("quarantine-{}", "unknown placeholder {}"),
        ("quarantine-{0}", "unknown placeholder {0}"),
        ("quarantine", "exactly once"),
        ("q-{short_digest}-{short_digest}", "exactly once"),
        ("quarantine-{short_digest:>12}", "no format spec"),
        ("quarantine-{short_digest!r}", "no format spec or conversion"),
        ("quarantine-{short_digest", "template"),
        ("q" * 117 + "-{short_digest}", "renders tags ECR refuses"),  # 130 characters rendered
        ("quarantine/{short_digest}", "renders tags ECR refuses"),
        ("-{short_digest}", "renders tags ECR refuses"),
        ("{{short_digest}}", "renders tags ECR refuses"),
        ("v1.0.{short_digest}", "renders release tags"),  # for a digest such as sha256:123456789012...
        ("v1.0.0_{short_digest}", "renders release tags"),
    ],
)
def test_invalid_quarantine_tags_are_refused_at_load(template: str, reason: str) -> None:
    message = refusal(f"[[guard]]\nquarantine_tag = {template!r}\n")
    assert "guard.0.quarantine_tag" in message
    assert reason in message


def test_the_longest_quarantine_tag_is_allowed() -> None:
    template = "q" * (128 - 12) + "{short_digest}"
    assert len(guard_from(f"[[guard]]\nquarantine_tag = '{template}'\n").quarantine_tag_for(DIGEST)) == 128


# --- user patterns: RE2, linear time, compiled once ----------------------------------------------


def test_a_catastrophic_pattern_matches_in_linear_time() -> None:
    """Python's re would backtrack for hours here; RE2 answers at once."""
    rule = guard_from("[[guard]]\nprotected = ['^(a+)+$']\n")
    assert not rule.is_protected("a" * 40 + "!")
    assert rule.is_protected("a" * 40)
    pattern = PatternRule(match=r"^(?P<run>(a+)+)$", tags=["run"])
    assert pattern.search("a" * 40 + "!") is None


@pytest.mark.parametrize(
    ("pattern", "location"),
    [
        (r"^(a)\1$", "guard.0.protected.0"),  # backreference
        (r"^v(?=1)", "guard.0.protected.0"),  # lookahead
        (r"(?<!x)y", "guard.0.mutable.0"),  # lookbehind
        ("(", "guard.0.protected.0"),
    ],
)
def test_patterns_re2_cannot_compile_are_refused_with_one_line(pattern: str, location: str) -> None:
    field = location.split(".")[2]
    message = refusal(f"[[guard]]\n{field} = ['{pattern}']\n")  # a TOML literal string: no escapes
    assert location in message
    assert "RE2" in message


def test_a_retag_pattern_re2_refuses_names_the_entry() -> None:
    message = refusal("[[retag]]\n[[retag.patterns]]\nmatch = '^(?P<x>a)(?P=x)$'\ntags = ['b']\n")
    assert "retag.0.patterns.0" in message and "RE2" in message


def test_pattern_search_returns_named_groups_with_missing_ones_empty() -> None:
    rule = PatternRule(match=r"^pr-(?P<number>\d+)(?:-(?P<suffix>[a-z]+))?$", tags=["preview-{number}{suffix}"])
    assert rule.search("pr-12") == {"number": "12", "suffix": ""}
    assert rule.search("pr-12-b") == {"number": "12", "suffix": "b"}
    assert rule.search("main") is None
    assert rule.placeholders == {"short_digest", "tag", "number", "suffix"}


def test_pattern_search_is_a_search_not_a_full_match() -> None:
    assert PatternRule(match=r"main", tags=["m"]).search("x-main-y") == {}


def test_patterns_are_compiled_once_per_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    rule = PatternRule(match=r"^b-(?P<n>\d+)$", tags=["n-{n}"])
    guard = guard_from("[[guard]]\nprotected = ['^r-']\nmutable = ['-x$']\n")
    rule.search("b-1")
    guard.is_protected("r-1")
    compiles: list[str] = []
    monkeypatch.setattr(re2, "compile", lambda *args: compiles.append(args[0]))
    assert rule.search("b-2") == {"n": "2"}
    assert guard.is_protected("r-2") and not guard.is_protected("r-2-x")
    assert compiles == []


# --- templates render realistic samples at load --------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "reason"),
    [
        ("[[retag]]\ndigest_tag = '{short_digest}' \n", None),
        ("[[retag]]\ndigest_tag = 'sha-{when}'\n", "unknown placeholder {when}"),
        # 11 short digests are 132 characters: a placeholder rendered as "0" would have hidden it.
        ("[[retag]]\ndigest_tag = '" + "{short_digest}" * 11 + "'\n", "renders tags ECR refuses"),
        ("[[retag]]\n[[retag.patterns]]\nmatch = '^x-(?P<n>.+)$'\ntags = ['{nope}']\n", "unknown placeholder {nope}"),
        ("[[retag]]\n[[retag.patterns]]\nmatch = '^x-(?P<n>.+)$'\ntags = ['{tag}-{n}']\n", None),
        ("[[retag]]\n[[retag.promote]]\ntags = ['{tag}']\n", "unknown placeholder {tag}"),
    ],
)
def test_templates_are_checked_at_load(toml: str, reason: str | None) -> None:
    if reason is None:
        parse_rules(toml)
    else:
        assert reason in refusal(toml)
