"""The finetune recipe; run it as
`accelerate launch recipes/finetune.py --config recipes/configs/<cfg>.yaml [--section.key value ...]`.

Also runs as `python recipes/finetune.py ...`; `--help` lists the options, `--resume` continues a run.
"""

import sys

from hebbopt.cli import finetune_main

if __name__ == "__main__":
    sys.exit(finetune_main())
