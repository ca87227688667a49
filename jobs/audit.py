"""spark-submit entry point: `spark-submit jobs/audit.py ARGS` equals `pairspark audit ARGS`."""

import sys

from pairspark.cli import main

if __name__ == "__main__":
    sys.exit(main(["audit", *sys.argv[1:]]))
