"""Effect sink for Lambda: every side effect becomes one structured log record."""

from __future__ import annotations

from aws_lambda_powertools import Logger

from ecr_automation.models.effects import Effect

logger = Logger(child=True)


class LoggingSink:
    def record(self, effect: Effect) -> None:
        logger.info(effect.kind, extra={"effect": effect.as_dict()})
