"""Tests of the trip booking example: four services with their own REST and event shapes."""
