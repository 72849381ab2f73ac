"""The composition root: settings, the `herald` CLI, local Kafka and PostgreSQL, simulators."""
