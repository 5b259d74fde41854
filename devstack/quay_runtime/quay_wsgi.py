"""Quay's registry (/v2) and web/API (/api/v1) blueprints on one Flask app, for gunicorn without nginx or
supervisord. Runs inside Quay's own venv with Quay's source as the working directory (not importable from
layerfill).

Quay's Kafka logs producer at the pinned commit passes `logentry.to_dict()` to a value serializer that calls
`.to_dict()` again, so every logged action fails with a 500 after its change committed. The serializer below
accepts a dict as well; it replaces the module's reference before the app (and with it the producer) is built,
so Quay's files stay unmodified. gunicorn must run without preload_app: a Kafka producer created before the
fork cannot send from the worker."""

import json

from data.logs_model.logs_producer import kafka_logs_producer
from data.logs_model.logs_producer.util import LogEntryJSONEncoder


def logs_json_serializer(logentry, sort_keys=False):
    value = logentry if isinstance(logentry, dict) else logentry.to_dict()
    return json.dumps(value, cls=LogEntryJSONEncoder, ensure_ascii=True, sort_keys=sort_keys).encode("ascii")


kafka_logs_producer.logs_json_serializer = logs_json_serializer

import registry  # noqa: E402  registers /v1 and /v2 on app.app
import web  # noqa: E402  registers the API, /keys and the rest on the same app

application = web.application
assert application is registry.application
