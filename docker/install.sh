#!/bin/sh
# Install replog, with its runtime dependencies only (and the extras REPLOG_EXTRAS names), into a new
# virtual environment.
#
#   [REPLOG_EXTRAS=etcd] sh docker/install.sh SOURCE_DIR VENV_DIR
#
# The image's build stage runs exactly this (see the Dockerfile), and tests/packaging/test_docker.py runs
# it the same way on the host, then starts `replog` from VENV_DIR: the image's install and start steps are
# tested where no container can run. PYTHON names the interpreter (default python3). REPLOG_EXTRAS (the
# Dockerfile's build ARG of that name) names extras of the project to install too, comma-separated: `etcd`
# brings the etcd server that compose.yaml's failover profile runs; the default image has none.
set -eu
src=$1
venv=$2
"${PYTHON:-python3}" -m venv "$venv"
extras=${REPLOG_EXTRAS:-}
# A regular (not editable) install of the project and its [project.dependencies], plus only the extras
# asked for: never the tests'.
if [ -n "$extras" ]; then
    target="$src[$extras]"
else
    target="$src"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check "$target"
"$venv/bin/replog" --version
# A server binary that cannot run here (another architecture, say) fails the build, not the container.
case ",$extras," in
*,etcd,*) "$venv/bin/etcd" --version ;;
esac
