"""Rules without a deploy, in the template: parameters as the settings read them, access to the chosen store only,
and alarms on the metrics the functions emit."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args

from ecr_automation.config import APPCONFIG_MIN_POLL_SECONDS, Settings
from ecr_automation.handlers import rules_refresh
from ecr_automation.local.template import FUNCTION_TYPE, SamTemplate

STORE_SERVICES = ("ssm:", "appconfig:")


def basics(template: SamTemplate) -> list[Any]:
    statements: list[Any] = template.body["Resources"]["FunctionBasicsPolicy"]["Properties"]["PolicyDocument"][
        "Statement"
    ]
    return statements


def test_the_parameters_are_what_the_settings_accept(template: SamTemplate) -> None:
    parameters = template.body["Parameters"]
    assert parameters["RulesSource"]["AllowedValues"] == list(
        get_args(Settings.model_fields["rules_source"].annotation)
    )
    assert parameters["RulesSource"]["Default"] == Settings.model_fields["rules_source"].default
    assert parameters["RulesCacheSeconds"]["MinValue"] == APPCONFIG_MIN_POLL_SECONDS
    assert parameters["RulesCacheSeconds"]["Default"] == Settings.model_fields["rules_cache_seconds"].default
    variables = template.body["Globals"]["Function"]["Environment"]["Variables"]
    rules_settings = {field.alias for name, field in Settings.model_fields.items() if name.startswith("rules_")}
    assert rules_settings <= set(variables)


def test_the_store_is_readable_only_when_chosen_and_only_that_one(template: SamTemplate) -> None:
    conditional = {
        statement["Fn::If"][0]: statement["Fn::If"] for statement in basics(template) if "Fn::If" in statement
    }
    ssm, appconfig = conditional["RulesFromSsm"], conditional["RulesFromAppConfig"]
    assert ssm[2] == {"Ref": "AWS::NoValue"} and appconfig[2] == {"Ref": "AWS::NoValue"}
    assert ssm[1]["Action"] == "ssm:GetParameter"
    assert ssm[1]["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter${RulesSsmParameter}"
    }
    assert appconfig[1]["Action"] == ["appconfig:StartConfigurationSession", "appconfig:GetLatestConfiguration"]
    assert appconfig[1]["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:appconfig:${AWS::Region}:${AWS::AccountId}:application/"
        "${RulesAppConfigApplicationId}/environment/${RulesAppConfigEnvironmentId}/configuration/"
        "${RulesAppConfigProfileId}"
    }
    # The parameter is a path, so the ARN is "parameter" followed by it
    assert template.body["Parameters"]["RulesSsmParameter"]["AllowedPattern"].startswith("^$|^/")
    # Nothing else in the template reaches SSM or AppConfig
    text = Path(template.path).read_text(encoding="utf-8")
    assert len(re.findall(r"\b(?:ssm|appconfig):[A-Z]", text)) == 3
    # Every function reads rules, so every function has the shared policy
    for logical_id, properties in template.resources_of_type(FUNCTION_TYPE).items():
        assert {"Ref": "FunctionBasicsPolicy"} in properties["Policies"], logical_id


def test_the_alarms_watch_the_metrics_the_functions_emit(template: SamTemplate) -> None:
    emitted = set(re.findall(r'name="(Rules\w+)"', Path(rules_refresh.__file__).read_text(encoding="utf-8")))
    variables = template.body["Globals"]["Function"]["Environment"]["Variables"]
    alarms = {
        logical_id: resource
        for logical_id, resource in template.body["Resources"].items()
        if resource["Type"] == "AWS::CloudWatch::Alarm" and resource["Properties"].get("MetricName") in emitted
    }
    assert emitted == {"RulesRejected", "RulesUnavailable"}
    assert {alarm["Properties"]["MetricName"] for alarm in alarms.values()} == emitted
    for alarm in alarms.values():
        properties = alarm["Properties"]
        assert "Condition" not in alarm  # on the dashboard, whichever the source: never fires with the file
        assert properties["Namespace"] == variables["POWERTOOLS_METRICS_NAMESPACE"]
        assert properties["Dimensions"] == [{"Name": "service", "Value": variables["POWERTOOLS_SERVICE_NAME"]}]
        assert properties["Statistic"] == "Sum" and properties["Threshold"] == 0
