"""The composition root and what operators touch: the `herald` CLI, process wiring, the ops API,
the console, health, metrics, dead-letter operations and repairs."""
