"""Typed models of the events delivered by EventBridge: ECR's, Inspector's, and this application's own.

One module per source of events, so that a function loads only the models of the events it reads
(creating the classes of the ~50 models is a large part of a cold start):

- ``base``: what all share (value constraints, severities, the envelope);
- ``image_action``: ECR Image Action;
- ``cloudtrail``: ECR API calls recorded by CloudTrail (and PutLifecyclePolicy's own model);
- ``scans``: ECR Image Scan, Inspector2 Scan, ECR Scan Resource Change;
- ``inspector_findings``: Inspector2 Finding;
- ``replication``: ECR Replication Action;
- ``application``: the events this application publishes itself;
- ``ecr_other``: ECR's events no function acts on (pull-through cache, referrers).

This module itself imports nothing: it names the sources and says which model reads which event, as
``"module:Class"`` strings that ``parsing.parse_event`` imports when such an event first arrives.
"""

ECR_SOURCE = "aws.ecr"
INSPECTOR_SOURCE = "aws.inspector2"
# What this application publishes its own events as; custom sources may not start with "aws.".
APPLICATION_SOURCE = "ecr-automation"
ACCEPTED_SOURCES = frozenset({ECR_SOURCE, INSPECTOR_SOURCE, APPLICATION_SOURCE})

# CloudTrail's record of an ECR API call; ``MODEL_BY_API_CALL`` names finer models for some calls.
API_CALL_MODEL = "cloudtrail:ApiCallEvent"
# (source, detail-type) -> the model, as "module:Class" in this package; any other detail-type is ignored.
MODEL_BY_DETAIL_TYPE: dict[tuple[str, str], str] = {
    (ECR_SOURCE, "ECR Image Action"): "image_action:ImageActionEvent",
    (ECR_SOURCE, "ECR Image Scan"): "scans:ImageScanEvent",
    (ECR_SOURCE, "ECR Replication Action"): "replication:ReplicationActionEvent",
    (ECR_SOURCE, "ECR Pull Through Cache Action"): "ecr_other:PullThroughCacheEvent",
    (ECR_SOURCE, "ECR Referrer Action"): "ecr_other:ReferrerActionEvent",
    (ECR_SOURCE, "ECR Scan Resource Change"): "scans:ScanResourceChangeEvent",
    (ECR_SOURCE, "AWS API Call via CloudTrail"): API_CALL_MODEL,
    (INSPECTOR_SOURCE, "Inspector2 Scan"): "scans:InspectorScanEvent",
    (INSPECTOR_SOURCE, "Inspector2 Finding"): "inspector_findings:InspectorFindingEvent",
    (APPLICATION_SOURCE, "Tag Guard Violation"): "application:TagGuardViolationEvent",
    (APPLICATION_SOURCE, "Tag Guard Violation Attributed"): "application:TagGuardViolationAttributedEvent",
    (APPLICATION_SOURCE, "Image Replication Failed"): "application:ImageReplicationFailedEvent",
    (APPLICATION_SOURCE, "Lifecycle Policy Violation"): "application:LifecycleViolationEvent",
}
# CloudTrail records of these API calls (source, eventName) get a model of their own; other calls stay
# ``API_CALL_MODEL``.
MODEL_BY_API_CALL: dict[tuple[str, str], str] = {
    (ECR_SOURCE, "PutLifecyclePolicy"): "cloudtrail:LifecyclePolicyPutEvent",
}
