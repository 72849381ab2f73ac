"""Delivery workers: consume notification requests, call providers, report every outcome."""
