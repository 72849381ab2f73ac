"""The payments example (seed 003): payment results delivered to merchants as signed webhooks."""
