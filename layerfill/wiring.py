"""Build the shared components from Settings, in one place, so every process wires them the same way."""

from __future__ import annotations

from typing import TYPE_CHECKING

from layerfill.config.settings import Settings
from layerfill.serde.codec import EventCodec

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient


def make_codec(settings: Settings) -> EventCodec:
    sr = settings.schema_registry
    if not sr.url:
        return EventCodec()
    extra = {}
    if sr.basic_auth_user_info:
        extra = {
            "basic.auth.credentials.source": "USER_INFO",
            "basic.auth.user.info": sr.basic_auth_user_info.get_secret_value(),
        }
    return EventCodec(sr.url, registry_config=extra)


def make_registry_client(settings: Settings) -> SchemaRegistryClient | None:
    """A client of the configured schema registry (same credentials as the codec's); None when none is set."""
    sr = settings.schema_registry
    if not sr.url:
        return None
    from confluent_kafka.schema_registry import SchemaRegistryClient

    conf = {"url": sr.url}
    if sr.basic_auth_user_info:
        conf["basic.auth.user.info"] = sr.basic_auth_user_info.get_secret_value()
    return SchemaRegistryClient(conf)
