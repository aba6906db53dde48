"""Unit tests of bspump-mongodb: no network, no servers."""
