"""spark-submit entry point: `spark-submit jobs/classify.py ARGS` equals `pairspark classify ARGS`."""

import sys

from pairspark.cli import main

if __name__ == "__main__":
    sys.exit(main(["classify", *sys.argv[1:]]))
