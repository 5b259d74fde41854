"""The logic behind the SRE commands (verify, backfill, replay, dlq): the CLI modules only parse and print."""
