"""``layerfill_build_info``: which layerfill (and which Kafka client) a process runs, as a constant-1 series whose
labels carry the versions, so dashboards and alerts can join on it (e.g. a rollout half done)."""

from __future__ import annotations

import platform

import confluent_kafka
from prometheus_client import Info

import layerfill

BUILD_INFO = Info("layerfill_build", "Versions this process runs: layerfill, Python, confluent-kafka, librdkafka")
BUILD_INFO.info(
    {
        "version": layerfill.__version__,
        "python": platform.python_version(),
        "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
    }
)
