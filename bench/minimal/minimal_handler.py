"""The floor a handler's cold start is measured against (bench/coldstart.py).

A Lambda handler with nothing but what every function of this application needs at minimum: boto3 and
Powertools' Logger, Tracer and Metrics, set up the way the handlers set them up. Importing it is the
least any of them can cost. It sits in a directory of its own: on the import path, bench/ would
shadow the standard library's ``copy`` with bench/copy.py.
"""

from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    client = boto3.client("ecr")
    return {"repositories": len(client.describe_repositories()["repositories"]), "event_id": event.get("id")}
