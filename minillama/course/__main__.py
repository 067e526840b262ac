import sys

from minillama.cli import main

raise SystemExit(main(["course", *sys.argv[1:]]))
