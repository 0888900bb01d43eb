"""Tests of the reference server (reference_server/), mirroring its modules."""
