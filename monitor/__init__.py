"""vidmon's core: settings, video quality features, the reference profile format.

The store, drift statistics, reports and the scheduler join it with their issues.
"""
