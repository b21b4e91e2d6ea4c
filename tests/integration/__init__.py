"""Integration tests: one real component at a time (Milvus, RabbitMQ, a loopback HTTP server, the models)."""
