"""NVIDIA Clara's AIAA protocol: wire format, OpenAPI additions and routes."""
