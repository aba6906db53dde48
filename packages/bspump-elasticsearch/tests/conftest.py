"""Unit tests of bspump-elasticsearch: no network, no servers (recorded responses stand in for the cluster)."""
