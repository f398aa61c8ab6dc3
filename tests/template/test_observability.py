"""The dashboard and the alarms cover every function, and show only metrics the reference documents.

A function added to the template without its entries in the errors and throttles alarms and in the
dashboard's Lambda widgets fails here; so does a dashboard metric missing from docs/metrics.md.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from ecr_automation.local.template import FUNCTION_TYPE, SamTemplate
from tests.support.metrics import BUSINESS_METRICS, METRICS_DOC, documented_metrics

ALARM_TYPE = "AWS::CloudWatch::Alarm"
LAMBDA_ALARMS = {"FunctionErrorsAlarm": "Errors", "FunctionThrottlesAlarm": "Throttles"}
LAMBDA_WIDGET_METRICS = ("Errors", "Throttles", "Duration")
MAX_METRICS_PER_ALARM = 10  # CloudWatch's hard limit for a metric math alarm
PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9:]+)(?:\.([A-Za-z]+))?\}")
PSEUDO = {"AWS::Region": "eu-west-1", "AWS::StackName": "ecr-automation", "AWS::AccountId": "123456789012"}


def substituted(resource: str, attribute: str | None) -> str:
    """What CloudFormation would put in place of ``${resource}`` or ``${resource.attribute}``, for the test."""
    if attribute is None:
        return f"ecr-automation-{resource}-TESTSUFFIX"
    if attribute == "Arn":
        return f"arn:aws:cloudwatch:eu-west-1:123456789012:alarm:ecr-automation-{resource}"
    return f"ecr-automation-{resource}-{attribute}"


def resolved_dashboard(template: SamTemplate) -> dict[str, Any]:
    (dashboard,) = template.resources_of_type("AWS::CloudWatch::Dashboard").values()
    body = dashboard["DashboardBody"]["Fn::Sub"]
    assert isinstance(body, str), "DashboardBody is one !Sub string"
    resources = template.body["Resources"]
    known = set(resources) | set(template.body.get("Parameters", {}))

    def substitute(match: re.Match[str]) -> str:
        name, attribute = match[1], match[2]
        if name in PSEUDO:
            return PSEUDO[name]
        assert name in known, f"the dashboard names {name!r}, which the template does not define"
        # A stack without the resource could not be deployed: such an entry needs a !Sub variable under !If.
        assert "Condition" not in resources.get(name, {}), f"the dashboard names conditional {name} unconditionally"
        return substituted(name, attribute)

    resolved = PLACEHOLDER.sub(substitute, body)
    assert "${" not in resolved
    data: dict[str, Any] = json.loads(resolved)  # valid JSON once substituted
    return data


@pytest.fixture(scope="module")
def dashboard(template: SamTemplate) -> dict[str, Any]:
    return resolved_dashboard(template)


def dashboard_metrics(dashboard: dict[str, Any]) -> list[list[Any]]:
    return [
        metric
        for widget in dashboard["widgets"]
        if widget["type"] == "metric"
        for metric in widget["properties"]["metrics"]
    ]


def shown(dashboard: dict[str, Any], namespace: str, metric: str) -> set[tuple[str, str]]:
    """The (dimension, value) pairs the dashboard shows ``namespace/metric`` for."""
    return {
        (str(entry[2]), str(entry[3]))
        for entry in dashboard_metrics(dashboard)
        if entry[0] == namespace and entry[1] == metric and len(entry) >= 4
    }


def globals_variables(template: SamTemplate) -> dict[str, Any]:
    variables: dict[str, Any] = template.body["Globals"]["Function"]["Environment"]["Variables"]
    return variables


def test_the_dashboard_is_valid_json_whose_widgets_fit_the_grid(dashboard: dict[str, Any]) -> None:
    cells: set[tuple[int, int]] = set()
    for widget in dashboard["widgets"]:
        assert widget["x"] + widget["width"] <= 24, widget
        area = {
            (x, y)
            for x in range(widget["x"], widget["x"] + widget["width"])
            for y in range(widget["y"], widget["y"] + widget["height"])
        }
        assert not area & cells, f"widgets overlap: {widget.get('properties', {}).get('title')}"
        cells |= area
    regions = {widget["properties"].get("region") for widget in dashboard["widgets"] if widget["type"] == "metric"}
    assert regions == {PSEUDO["AWS::Region"]}


def test_every_function_is_in_the_dashboard_lambda_widgets(template: SamTemplate, dashboard: dict[str, Any]) -> None:
    functions = {substituted(name, None) for name in template.resources_of_type(FUNCTION_TYPE)}
    for metric in LAMBDA_WIDGET_METRICS:
        names = {value for dimension, value in shown(dashboard, "AWS/Lambda", metric) if dimension == "FunctionName"}
        assert names == functions, f"AWS/Lambda {metric}: missing {sorted(functions - names)}"


def test_the_dashboard_shows_documented_metrics_only_and_every_business_metric(
    template: SamTemplate, dashboard: dict[str, Any]
) -> None:
    variables = globals_variables(template)
    namespace, service = variables["POWERTOOLS_METRICS_NAMESPACE"], variables["POWERTOOLS_SERVICE_NAME"]
    custom = [entry for entry in dashboard_metrics(dashboard) if not str(entry[0]).startswith("AWS/")]
    assert custom, "the dashboard shows no business metric"
    assert {entry[0] for entry in custom} == {namespace}
    assert {(entry[2], entry[3]) for entry in custom} == {("service", service)}  # the dimensions Powertools emits
    names = {entry[1] for entry in custom}
    undocumented = sorted(names - set(documented_metrics()))
    assert undocumented == [], f"the dashboard shows metrics docs/metrics.md does not document: {undocumented}"
    assert set(BUSINESS_METRICS) <= names, sorted(set(BUSINESS_METRICS) - names)


def test_the_dashboard_shows_every_dead_letter_queue_and_the_replication_queue_age(
    template: SamTemplate, dashboard: dict[str, Any]
) -> None:
    queues = template.resources_of_type("AWS::SQS::Queue")
    dead_letter_queues = {name for name in queues if name.endswith("DeadLetterQueue")}
    assert dead_letter_queues
    depths = {value for _, value in shown(dashboard, "AWS/SQS", "ApproximateNumberOfMessagesVisible")}
    for name in dead_letter_queues:
        assert substituted(name, "QueueName") in depths, name
    ages = {value for _, value in shown(dashboard, "AWS/SQS", "ApproximateAgeOfOldestMessage")}
    assert substituted("ReplicationQueue", "QueueName") in ages


def test_the_dashboard_alarm_widget_lists_every_alarm(template: SamTemplate, dashboard: dict[str, Any]) -> None:
    listed = {
        alarm
        for widget in dashboard["widgets"]
        if widget["type"] == "alarm"
        for alarm in widget["properties"]["alarms"]
    }
    assert listed == {substituted(name, "Arn") for name in template.resources_of_type(ALARM_TYPE)}


@pytest.mark.parametrize(("alarm", "metric"), sorted(LAMBDA_ALARMS.items()))
def test_the_lambda_alarm_sums_its_metric_over_every_function(template: SamTemplate, alarm: str, metric: str) -> None:
    queries = template.resources_of_type(ALARM_TYPE)[alarm]["Metrics"]
    (watched,) = [query for query in queries if query.get("ReturnData") is True]
    stats = [query for query in queries if "MetricStat" in query]
    assert all(query.get("ReturnData") is False for query in stats)
    assert len(stats) <= MAX_METRICS_PER_ALARM, f"{alarm}: CloudWatch allows 10 metrics; split it in two"

    covered = []
    for query in stats:
        watched_metric = query["MetricStat"]["Metric"]
        assert (watched_metric["Namespace"], watched_metric["MetricName"]) == ("AWS/Lambda", metric)
        assert query["MetricStat"]["Stat"] == "Sum"
        ((dimension),) = watched_metric["Dimensions"]
        assert dimension["Name"] == "FunctionName"
        covered.append(dimension["Value"]["Ref"])
    functions = sorted(template.resources_of_type(FUNCTION_TYPE))
    assert sorted(covered) == functions, f"{alarm}: add the missing functions {sorted(set(functions) - set(covered))}"

    summed = re.fullmatch(r"SUM\(\[([A-Za-z0-9_, ]+)\]\)", watched["Expression"])
    assert summed, watched["Expression"]
    assert sorted(part.strip() for part in summed[1].split(",")) == sorted(query["Id"] for query in stats)


def test_every_alarm_notifies_the_optional_alarm_topic(template: SamTemplate) -> None:
    expected = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
    parameter = template.body["Parameters"]["AlarmTopicArn"]
    assert parameter["Default"] == ""
    assert template.body["Conditions"]["HasAlarmTopic"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]}
    alarms = template.resources_of_type(ALARM_TYPE)
    assert set(LAMBDA_ALARMS) <= set(alarms)
    for name, properties in alarms.items():
        assert properties.get("AlarmActions") == expected, name
        assert properties.get("OKActions") == expected, name


def test_every_alarm_has_its_section_in_the_metrics_reference(template: SamTemplate) -> None:
    alarms_section = METRICS_DOC.read_text(encoding="utf-8").split("\n## Alarms", 1)
    assert len(alarms_section) == 2, "docs/metrics.md has no Alarms section"
    documented = set(re.findall(r"^### `?([A-Za-z0-9]+)`?", alarms_section[1], flags=re.MULTILINE))
    assert documented == set(template.resources_of_type(ALARM_TYPE))
