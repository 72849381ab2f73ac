"""Faust stream processors that derive notification requests and state from domain events."""
