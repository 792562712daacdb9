"""Exchange Gateway: share selected Kafka streams with partner organisations, under contract."""

__version__ = "0.1.0"
