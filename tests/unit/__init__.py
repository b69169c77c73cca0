"""Fast, deterministic unit tests of the pure pieces (no broker, no network, no sleeping servers)."""
