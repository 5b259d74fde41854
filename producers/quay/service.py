"""`layerfill run quay-logs`: the configured source (quay_logs.source), built from settings."""

from __future__ import annotations

from layerfill.config.settings import Settings

from .api_source import ApiLogsSource
from .kafka_source import KafkaLogsSource


def make_source(settings: Settings) -> KafkaLogsSource | ApiLogsSource:
    if settings.quay_logs.source == "api":
        return ApiLogsSource(settings)
    return KafkaLogsSource(settings)
