"""centile: a customer-analytics engine over order histories."""

__version__ = "0.1.0"
