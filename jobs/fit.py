"""spark-submit entry point: `spark-submit jobs/fit.py ARGS` equals `pairspark fit ARGS`."""

import sys

from pairspark.cli import main

if __name__ == "__main__":
    sys.exit(main(["fit", *sys.argv[1:]]))
