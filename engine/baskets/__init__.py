"""Basket analysis per segment and product recommendations per customer."""
