"""Domain tables and the transactional outbox, `emit()` for writers, and the relay to Kafka."""
