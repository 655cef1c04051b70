"""The pretrain recipe; run it as
`accelerate launch recipes/pretrain.py --config recipes/configs/<cfg>.yaml [--section.key value ...]`.

Also runs as `python recipes/pretrain.py ...`; `--help` lists the options, `--resume` continues a run.
"""

import sys

from hebbopt.cli import pretrain_main

if __name__ == "__main__":
    sys.exit(pretrain_main())
