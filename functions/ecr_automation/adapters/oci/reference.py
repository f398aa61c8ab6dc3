"""Image references as users write them: ``[docker://]HOST[:PORT]/REPOSITORY[:TAG][@sha256:HEX]``."""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_HUB_HOST = "registry-1.docker.io"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", DOCKER_HUB_HOST})
# The distribution spec's grammar (docs/spec.md "Pulling manifests").
_REPOSITORY = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
# Only sha256: it is what every registry and every image tool in use produces.
DIGEST = re.compile(r"sha256:[a-f0-9]{64}")


class InvalidReferenceError(ValueError):
    """A string that is not an image reference."""


@dataclass(frozen=True)
class Reference:
    registry: str  # host[:port], as it appears in URLs
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        raw = text.strip().removeprefix("docker://")
        remainder, _, digest = raw.partition("@")
        first, slash, rest = remainder.partition("/")
        # As docker does: the first component names a registry only if it looks like a host.
        if slash and ("." in first or ":" in first or first == "localhost"):
            registry, path = first, rest
        else:
            registry, path = "docker.io", remainder
        tag: str | None = None
        last_slash = path.rfind("/")
        colon = path.rfind(":")
        if colon > last_slash:
            path, tag = path[:colon], path[colon + 1 :]
        if registry in _DOCKER_HUB_ALIASES:
            registry = DOCKER_HUB_HOST
            if "/" not in path:
                path = f"library/{path}"
        if not _REPOSITORY.fullmatch(path):
            raise InvalidReferenceError(f"{text!r}: invalid repository name {path!r}")
        if tag is not None and not _TAG.fullmatch(tag):
            raise InvalidReferenceError(f"{text!r}: invalid tag {tag!r}")
        if digest and not DIGEST.fullmatch(digest):
            raise InvalidReferenceError(f"{text!r}: invalid or unsupported digest {digest!r} (sha256 only)")
        return cls(registry, path, tag, digest or None)

    @property
    def manifest_reference(self) -> str:
        """What goes after ``/manifests/``: the digest when there is one, else the tag, else ``latest``."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text
