"""Unit tests: pure functions and in-process objects, no broker, no Milvus, no started process."""
