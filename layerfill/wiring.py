"""Build the shared components from Settings, in one place, so every process wires them the same way."""

from __future__ import annotations

from layerfill.config.settings import Settings
from layerfill.serde.codec import EventCodec


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
