"""Quay as an event source: its `pull_repo` action logs (from Kafka or from its logs API) -> ManifestPulled."""
