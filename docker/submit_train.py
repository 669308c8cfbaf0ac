"""Submit the training job to the compose Flink cluster, unless it already runs there.

``docker compose up`` starts a one-shot container again each time it is run, so
a plain ``streamlearn train --cluster ...`` would add a second job learning the
same model. This wrapper takes exactly the arguments of ``streamlearn train``,
asks the cluster's REST API for a live job named ``streamlearn-train-<model>``
(the name ``flink_jobs/train.py`` gives its job), and only submits when there
is none.

Usage (the compose file's ``trainer`` service)::

    python docker/submit_train.py --cluster jobmanager:8081 --config train.toml --detached
"""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["LIVE_STATES", "live_training_job", "main"]

#: Job states in which a job still holds (or is about to hold) the model's learners.
LIVE_STATES = frozenset(
    {"INITIALIZING", "CREATED", "RUNNING", "RESTARTING", "FAILING", "CANCELLING", "RECONCILING"}
)


def live_training_job(overview: Mapping[str, Any], model: str) -> str | None:
    """The id of a live training job of ``model`` in a ``/jobs/overview`` answer, else None.

    >>> overview = {"jobs": [
    ...     {"jid": "a1", "name": "streamlearn-train-default", "state": "FINISHED"},
    ...     {"jid": "b2", "name": "streamlearn-train-default", "state": "RUNNING"},
    ...     {"jid": "c3", "name": "streamlearn-train-ctr", "state": "RUNNING"}]}
    >>> live_training_job(overview, "default")
    'b2'
    >>> live_training_job(overview, "churn") is None
    True
    """
    name = f"streamlearn-train-{model}"
    for job in overview.get("jobs", []):
        if job.get("name") == name and job.get("state") in LIVE_STATES:
            return str(job.get("jid"))
    return None


def main(argv: Sequence[str] | None = None) -> int:
    from streamlearn.cli import build_parser
    from streamlearn.cli import main as streamlearn_main
    from streamlearn.errors import ConfigError
    from streamlearn.training.cli_args import config_from_args

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(["train", *argv])
    if not args.cluster:
        raise SystemExit("submit_train.py: --cluster HOST:PORT is required")
    try:
        cfg = config_from_args(args)
    except ConfigError as exc:
        print(f"streamlearn train: {exc}", file=sys.stderr)
        return 1
    url = f"http://{args.cluster}/jobs/overview"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            overview = json.loads(resp.read())
    except (OSError, ValueError) as exc:
        print(f"no Flink cluster answers at {url} ({exc})", file=sys.stderr)
        return 1
    job = live_training_job(overview, cfg.store.model)
    if job is not None:
        print(f"the training job of model {cfg.store.model!r} already runs: {job}; not submitted")
        return 0
    return streamlearn_main(["train", *argv])


if __name__ == "__main__":
    sys.exit(main())
