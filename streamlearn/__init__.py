"""streamlearn: streaming online learning on Kafka and PyFlink.

The library never imports pyflink at module level: learners, features,
metrics, state, merge and the model store work without Flink; the jobs in
``flink_jobs/`` adapt them.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
