"""Limits on what clients send, shared by the API (which validates) and the store (which sizes fields)."""

URL_MAX_CHARS = 2083
METADATA_MAX_CHARS = 65535
