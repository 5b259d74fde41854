"""The upstream client's transport chain: one concern per module, each wrapping the next (see chain.py).

Kept free of imports so `layerfill.remote.errors` can use `redact` without a cycle.
"""
