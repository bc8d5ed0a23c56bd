"""gatewatch's spine: ingest -> events -> Kafka -> workers -> decisions."""
