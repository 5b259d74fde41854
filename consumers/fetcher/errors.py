"""The fetcher's failures follow the rule every stage shares (layerfill.kafka.classify); fill.py raises these."""

from __future__ import annotations

from layerfill.kafka.classify import PermanentError, TransientError

__all__ = ["PermanentError", "TransientError"]
