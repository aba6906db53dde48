"""Unit tests of bspump-postgresql: no server; recorded server messages stand in for PostgreSQL."""
