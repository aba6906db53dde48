"""Unit tests of bspump-mqtt: no network beyond a scripted broker on loopback, no servers."""
