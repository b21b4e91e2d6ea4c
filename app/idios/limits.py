"""Limits on what clients send, shared by the API (which validates) and the store (which sizes fields)."""

URL_MAX_CHARS = 2083
# Milvus caps a JSON field at 65,536 bytes.
METADATA_MAX_BYTES = 65535
