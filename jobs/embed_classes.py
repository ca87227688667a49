"""spark-submit entry point: `spark-submit jobs/embed-classes.py ARGS` equals `pairspark embed-classes ARGS`."""

import sys

from pairspark.cli import main

if __name__ == "__main__":
    sys.exit(main(["embed-classes", *sys.argv[1:]]))
