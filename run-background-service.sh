#!/usr/bin/env bash
# Start MongoDB (the image docker-compose.yml uses) in the background for local development.
#   ./run-background-service.sh          start it (or say it already runs) on 127.0.0.1:${MONGO_PORT:-27017}
#   ./run-background-service.sh stop     stop and remove the container (the data volume stays)
# Then: export MACHINERY_MONGO_URI="mongodb://machinery:machinery@127.0.0.1:27017/machinery?authSource=admin"
set -euo pipefail

NAME="${MONGO_CONTAINER:-machinery-mongo}"
IMAGE="${MONGO_IMAGE:-mongo:7}"
PORT="${MONGO_PORT:-27017}"
USER_NAME="${MONGO_USER:-machinery}"
PASSWORD="${MONGO_PASSWORD:-machinery}"
VOLUME="${MONGO_VOLUME:-machinery-mongo-data}"
URI="mongodb://${USER_NAME}:${PASSWORD}@127.0.0.1:${PORT}/machinery?authSource=admin"

no_docker() {
    cat >&2 <<MESSAGE
run-background-service.sh: $1

MongoDB is started here with docker, and docker cannot be used on this machine.
Either:
  - use the embedded in-memory store, which needs nothing (the default):
        unset MACHINERY_MONGO_URI        # or MACHINERY_MONGO_URI=mongomock://localhost/machinery
    (it is lost when the process exits, and serves one process only);
  - or point Machinery at a MongoDB you run elsewhere:
        export MACHINERY_MONGO_URI="mongodb://USER:PASSWORD@HOST:27017/machinery?authSource=admin"
MESSAGE
    exit 1
}

command -v docker >/dev/null 2>&1 || no_docker "docker is not installed (no 'docker' on PATH)."
docker info >/dev/null 2>&1 || no_docker "the docker engine does not answer ('docker info' failed)."

if [ "${1:-start}" = "stop" ]; then
    docker rm -f "$NAME" >/dev/null 2>&1 && echo "stopped $NAME (volume $VOLUME kept)" || echo "$NAME was not running"
    exit 0
fi

if [ -n "$(docker ps -q --filter "name=^${NAME}$")" ]; then
    echo "$NAME already runs"
else
    docker rm -f "$NAME" >/dev/null 2>&1 || true
    docker run -d --name "$NAME" \
        -p "127.0.0.1:${PORT}:27017" \
        -e MONGO_INITDB_ROOT_USERNAME="$USER_NAME" \
        -e MONGO_INITDB_ROOT_PASSWORD="$PASSWORD" \
        -v "${VOLUME}:/data/db" \
        "$IMAGE" >/dev/null
    echo -n "waiting for MongoDB on 127.0.0.1:${PORT} "
    for _ in $(seq 1 60); do
        if docker exec "$NAME" mongosh --quiet --eval "db.adminCommand('ping').ok" >/dev/null 2>&1; then
            break
        fi
        echo -n "."
        sleep 1
    done
    echo
    docker exec "$NAME" mongosh --quiet --eval "db.adminCommand('ping').ok" >/dev/null 2>&1 \
        || { echo "MongoDB did not answer within 60 s; see: docker logs $NAME" >&2; exit 1; }
fi

echo "MongoDB is up. Use it with:"
echo "  export MACHINERY_MONGO_URI=\"${URI}\""
echo "  export MACHINERY_TEST_MONGO_URI=\"mongodb://${USER_NAME}:${PASSWORD}@127.0.0.1:${PORT}/machinery_test?authSource=admin\""
