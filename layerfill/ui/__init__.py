"""`layerfill run ui`: a read-only status page, rendered on the server (no JavaScript)."""
