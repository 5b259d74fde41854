"""layerfill: make every image pulled through a registry pull-through cache complete in the cache."""

__version__ = "0.1.0"
