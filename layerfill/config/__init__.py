from .routes import NoRoute, Route, find_route
from .settings import Settings, load_settings

__all__ = ["NoRoute", "Route", "Settings", "find_route", "load_settings"]
