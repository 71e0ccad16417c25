#!/bin/sh
# Runs once, on an empty data volume: MLflow gets its own database beside fovea's.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -c "CREATE DATABASE mlflow OWNER \"$POSTGRES_USER\""
