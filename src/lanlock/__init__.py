"""lanlock: browser-trusted HTTPS names for devices on private networks."""

__version__ = "0.1.0"
