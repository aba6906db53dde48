"""The installed version of bspump-core."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bspump-core")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+source"
