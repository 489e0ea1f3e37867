#!/bin/sh
# Creates the bucket and a pipeline user that may only touch that bucket. Idempotent.
set -eu
mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing local/mammoseg
mc admin policy create local mammoseg-pipeline /infra/pipeline-policy.json || true
mc admin user add local "$PIPELINE_USER" "$PIPELINE_PASSWORD"
mc admin policy attach local mammoseg-pipeline --user "$PIPELINE_USER" || true
echo "minio-init: bucket 'mammoseg' and user '$PIPELINE_USER' ready"
