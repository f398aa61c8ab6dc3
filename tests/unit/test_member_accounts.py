"""Which credentials act in which account: settings, the wiring, and the member role's ARN."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from ecr_automation.adapters.clients import AwsClients, MemberAccounts, client_in
from ecr_automation.config import ConfigurationError, settings_from_environment
from ecr_automation.dependencies import member_accounts
from ecr_automation.models.domain import RepositoryRef

CENTRAL, MEMBER = "111111111111", "222222222222"
ORGANISATION = {
    "AWS_REGION": "eu-west-1",
    "APPLICATION_ACCOUNT_ID": CENTRAL,
    "MEMBER_ACCOUNT_ROLE_NAME": "ecr-automation-member",
    "MEMBER_ACCOUNT_EXTERNAL_ID": "ext-9f2c1d",
}


def test_without_an_organisation_every_account_is_acted_on_with_the_functions_own_credentials() -> None:
    # The template passes the role name's default and an empty external id; the local runner may pass the
    # account id unrendered.
    settings = settings_from_environment(
        {
            "AWS_REGION": "eu-west-1",
            "APPLICATION_ACCOUNT_ID": "AWS::AccountId",
            "MEMBER_ACCOUNT_ROLE_NAME": "ecr-automation-member",
            "MEMBER_ACCOUNT_EXTERNAL_ID": "",
        }
    )
    assert member_accounts(settings) is None
    assert AwsClients(members=member_accounts(settings)).acting_account(MEMBER) is None


def test_with_an_organisation_other_accounts_are_members_and_the_own_account_is_not() -> None:
    members = member_accounts(settings_from_environment(ORGANISATION))
    assert members == MemberAccounts(CENTRAL, "ecr-automation-member", "ext-9f2c1d", "eu-west-1")
    clients = AwsClients(members=members)
    assert clients.acting_account(MEMBER) == MEMBER
    assert clients.acting_account(CENTRAL) is None


@pytest.mark.parametrize(
    ("variable", "value"),
    [("APPLICATION_ACCOUNT_ID", ""), ("APPLICATION_ACCOUNT_ID", "AWS::AccountId"), ("MEMBER_ACCOUNT_ROLE_NAME", "")],
)
def test_an_external_id_without_the_account_or_the_role_name_is_refused_at_start(variable: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=r"MEMBER_ACCOUNT_EXTERNAL_ID: .*needs MEMBER_ACCOUNT_ROLE_NAME"):
        settings_from_environment({**ORGANISATION, variable: value})


def test_the_external_id_never_shows_in_settings_or_errors() -> None:
    settings = settings_from_environment(ORGANISATION)
    assert "ext-9f2c1d" not in repr(settings) and "ext-9f2c1d" not in repr(member_accounts(settings))
    with pytest.raises(ConfigurationError) as refused:
        settings_from_environment({**ORGANISATION, "MEMBER_ACCOUNT_EXTERNAL_ID": "has spaces in it"})
    assert "MEMBER_ACCOUNT_EXTERNAL_ID" in str(refused.value) and "has spaces" not in str(refused.value)


@pytest.mark.parametrize(
    ("region", "arn"),
    [
        ("eu-west-1", f"arn:aws:iam::{MEMBER}:role/r"),
        ("cn-north-1", f"arn:aws-cn:iam::{MEMBER}:role/r"),
        ("us-gov-west-1", f"arn:aws-us-gov:iam::{MEMBER}:role/r"),
    ],
)
def test_the_member_role_arn_is_in_the_functions_partition(region: str, arn: str) -> None:
    assert MemberAccounts(CENTRAL, "r", "ext", region).role_arn(MEMBER) == arn


def test_the_own_account_is_served_by_the_functions_own_clients() -> None:
    clients = AwsClients(
        boto3.Session(aws_access_key_id="x", aws_secret_access_key="x"),
        members=member_accounts(settings_from_environment(ORGANISATION)),
    )
    assert clients.client_in(CENTRAL, "ecr", "eu-west-1") is clients.client("ecr", "eu-west-1")
    assert clients.client_in(MEMBER, "ecr", "eu-west-1") is not clients.client("ecr", "eu-west-1")


def test_the_ledger_keys_every_record_by_registry_as_well_as_repository() -> None:
    # Every ledger record's partition key is RepositoryRef.key (adapters/ledger.py): claims, leases,
    # violations, actors, releases, children and sent messages of two accounts' team/web never meet.
    ours, theirs = RepositoryRef(CENTRAL, "eu-west-1", "team/web"), RepositoryRef(MEMBER, "eu-west-1", "team/web")
    assert ours.key != theirs.key and ours.key.startswith(CENTRAL) and theirs.key.startswith(MEMBER)


class _StandIn:
    """A test double serving only ``client(service, region)``, as several tests' doubles do."""

    def client(self, service: str, region: str) -> Any:
        return (service, region)


def test_a_stand_in_without_accounts_is_asked_the_plain_way() -> None:
    assert client_in(_StandIn(), MEMBER, "ecr", "eu-west-1") == ("ecr", "eu-west-1")  # type: ignore[arg-type]
