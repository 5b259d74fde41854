"""How a scan can fail. Each error says whether it is transient; layerfill.kafka.classify applies the rule
the fetcher shares.

- ClairUnavailable: Clair did not answer, or answered 5xx without a report: retried in process, then through
  the retry topic, then dead-lettered (the event is never dropped).
- IndexFailed: Clair answered with an IndexError report: retried in process (Clair indexes again), then
  recorded as the scan's final `index_error` with Clair's message.
- ClairRejected: Clair refused the manifest (HTTP 4xx): recorded as `unsupported` with Clair's message.
- Anything about the event itself (no route, a bad digest) is permanent: dead-lettered at once."""

from __future__ import annotations


class ClairUnavailable(Exception):
    """Clair is down, unreachable, overloaded or broken: try again later."""

    transient = True


class ClairRejected(Exception):
    """Clair answered 4xx to the index request: it cannot handle this manifest."""

    transient = False


class IndexFailed(Exception):
    """Clair's index report ended in IndexError; the message is Clair's."""

    transient = True
