"""The training job's library half: configuration, workers, checkpoints.

``flink_jobs/train.py`` wires these into a PyFlink job; nothing here imports
pyflink, so all of it runs and is tested without Flink.
"""

from __future__ import annotations

from streamlearn.training.config import TrainConfig

__all__ = ["TrainConfig"]
