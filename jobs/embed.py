"""spark-submit entry point: `spark-submit jobs/embed.py ARGS` equals `pairspark embed ARGS`."""

import sys

from pairspark.cli import main

if __name__ == "__main__":
    sys.exit(main(["embed", *sys.argv[1:]]))
