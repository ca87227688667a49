"""spark-submit entry point: `spark-submit jobs/evaluate.py ARGS` equals `pairspark evaluate ARGS`."""

import sys

from pairspark.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
