"""spark-submit entry point: `spark-submit jobs/diff.py ARGS` equals `pairspark diff ARGS`."""

import sys

from pairspark.cli import main

if __name__ == "__main__":
    sys.exit(main(["diff", *sys.argv[1:]]))
