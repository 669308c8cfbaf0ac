#!/usr/bin/env bash
# The streamlearn image's entrypoint: one image, several roles.
#
#   jobmanager      the Flink jobmanager, in the foreground (PyFlink's own bin/jobmanager.sh)
#   taskmanager     a Flink taskmanager, in the foreground (bin/taskmanager.sh)
#   submit-train    submit flink_jobs/train.py with `streamlearn train ARGS...` unless the
#                   model's training job already runs on the cluster (docker/submit_train.py)
#   anything else   run as a command, e.g. `streamlearn serve ...`, `streamlearn topics ...`;
#                   also how Flink's native Kubernetes pods (the operator's, deploy/k8s/) start:
#                   `bash -c "kubernetes-jobmanager.sh kubernetes-application ..."`, with this
#                   file as `kubernetes.entry.path` and $FLINK_HOME/bin on the image's PATH
#
# The Flink processes read /etc/streamlearn/flink/config.yaml (FLINK_CONF_DIR) and log to
# the console, so `docker compose logs` shows them.
set -euo pipefail

role="${1:-}"
case "$role" in
  jobmanager|taskmanager)
    shift
    exec bash "$FLINK_HOME/bin/$role.sh" start-foreground "$@"
    ;;
  submit-train)
    shift
    exec python "$STREAMLEARN_HOME/docker/submit_train.py" "$@"
    ;;
  *)
    exec "$@"
    ;;
esac
