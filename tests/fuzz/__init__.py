"""Fuzz tests: generated HTTP requests (schemathesis) and hostile MQTT payloads against real servers."""
