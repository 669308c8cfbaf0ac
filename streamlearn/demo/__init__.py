"""``streamlearn demo``: the whole loop, end to end, with a live view and a report.

>>> from streamlearn.demo import DemoConfig
>>> DemoConfig().duration_s, DemoConfig().rate
(90.0, 10000)

:func:`run_demo` starts what is not running (broker, topics, training job,
prediction server), publishes a drifting stream at a steady rate, shows
events/s in and learned, prequential metrics, the serving version and its age,
dead letters and freshness once a second, then stops what it started and
writes a report directory with JSON figures and PNG plots.
"""

from streamlearn.demo.config import DemoConfig
from streamlearn.demo.display import LiveDisplay, Snapshot
from streamlearn.demo.freshness import FreshnessTracker, Sample, percentiles
from streamlearn.demo.runner import DemoResult, default_report_dir, run_demo

__all__ = [
    "DemoConfig",
    "DemoResult",
    "FreshnessTracker",
    "LiveDisplay",
    "Sample",
    "Snapshot",
    "default_report_dir",
    "percentiles",
    "run_demo",
]
