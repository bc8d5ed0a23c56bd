"""Where decisions and alerts go after the worker: Kafka topics now, SIEM exporters later."""
