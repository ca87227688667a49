"""spark-submit entry point: `spark-submit jobs/run.py ARGS` equals `pairspark run ARGS`."""

import sys

from pairspark.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
