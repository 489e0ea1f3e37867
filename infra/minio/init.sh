#!/bin/sh
# Creates the bucket, a pipeline user that may only touch that bucket, and the webhook that
# tells the bridge about uploads under raw/ (not the pipeline's own outputs). Idempotent.
set -eu
: "${MAMMOSEG_BRIDGE_TOKEN:?MAMMOSEG_BRIDGE_TOKEN must be set}"
mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing local/mammoseg
mc admin policy create local mammoseg-pipeline /infra/pipeline-policy.json || true
mc admin user add local "$PIPELINE_USER" "$PIPELINE_PASSWORD"
mc admin policy attach local mammoseg-pipeline --user "$PIPELINE_USER" || true

# Bucket notifications → the bridge (http://bridge:8088), which turns them into
# mammoseg.object.created Prefect events. queue_dir keeps undelivered notifications on the
# MinIO volume and retries them while the bridge or Prefect is down.
mc admin config set local notify_webhook:mammoseg \
  endpoint="http://bridge:8088/minio/events" \
  auth_token="$MAMMOSEG_BRIDGE_TOKEN" \
  queue_dir="/events" queue_limit="100000"
mc admin service restart local   # notify_* targets are read at start-up
i=0
until mc admin info local >/dev/null 2>&1; do
  i=$((i + 1)); [ "$i" -le 60 ] || { echo "minio-init: MinIO did not come back" >&2; exit 1; }
  sleep 1
done
ARN=arn:minio:sqs::mammoseg:webhook
mc event list local/mammoseg "$ARN" 2>/dev/null | grep -q "$ARN" \
  || mc event add local/mammoseg "$ARN" --event put --prefix raw/
echo "minio-init: bucket 'mammoseg', user '$PIPELINE_USER' and the raw/ upload webhook ready"
