"""A lease must outlive the function that holds it, or a slow holder could write after losing it."""

from __future__ import annotations

from ecr_automation.adapters.ledger import FENCE_MARGIN_SECONDS, LEASE_SECONDS
from ecr_automation.local.template import FUNCTION_TYPE, SamTemplate

# The functions that take the ledger's leases (the guard per tag, retag per repository's floating tags).
LEASE_HOLDERS = ("TagGuardFunction", "RetagFunction")


def test_a_live_holder_never_outlasts_its_lease(template: SamTemplate) -> None:
    default = template.body["Globals"]["Function"]["Timeout"]
    functions = template.resources_of_type(FUNCTION_TYPE)
    assert set(LEASE_HOLDERS) <= set(functions)
    for logical_id in LEASE_HOLDERS:
        timeout = functions[logical_id].get("Timeout", default)
        # Lambda stops the function at its timeout; the fence refuses writes this long before expiry.
        assert timeout <= LEASE_SECONDS - FENCE_MARGIN_SECONDS, (logical_id, timeout)
