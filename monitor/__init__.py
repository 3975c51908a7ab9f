"""vidmon's core: settings, video quality features, the reference profile format.

The store, drift statistics, reports and the scheduler join it with their issues.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vidmon")  # the one place vidmon's version is read from
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
