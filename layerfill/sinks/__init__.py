"""Storage sinks: where the fetcher makes blobs and manifests present in the cache (see base.Sink)."""
