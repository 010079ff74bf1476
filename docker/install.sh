#!/bin/sh
# Install replog, with its runtime dependencies only, into a new virtual environment.
#
#   sh docker/install.sh SOURCE_DIR VENV_DIR
#
# The image's build stage runs exactly this (see the Dockerfile), and tests/packaging/test_docker.py runs
# it the same way on the host, then starts `replog` from VENV_DIR: the image's install and start steps are
# tested where no container can run. PYTHON names the interpreter (default python3).
set -eu
src=$1
venv=$2
"${PYTHON:-python3}" -m venv "$venv"
# A regular (not editable) install of the project and its [project.dependencies]: no extras, no tests.
"$venv/bin/pip" install --quiet --disable-pip-version-check "$src"
"$venv/bin/replog" --version
