"""Unit tests of bspump-kafka: no network, no servers."""
