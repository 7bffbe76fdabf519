"""Write canisters/llama/unicode_classes.json from llama.cpp's src/unicode-data.cpp.

The pre-tokenizers must classify codepoints exactly as llama.cpp does (its table is generated
from Unicode 15.1), and identically on every replica, whatever Python's own `unicodedata`
version is. So the classes they need are pinned as data, taken from the llama-cpp-python 0.3.36
sdist (fetched and cached by tests/refdata.py). tests/test_tokenizer_reference.py checks that the
committed file still equals the table parsed from the sdist.

Run from the repository root: python3 scripts/make_unicode_table.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.refdata import SDIST_REQUIREMENT, UNICODE_DATA, unicode_table  # noqa: E402

OUTPUT = REPO / "canisters" / "llama" / "unicode_classes.json"


def main() -> None:
    table = unicode_table()
    document = {
        "source": f"llama.cpp {UNICODE_DATA} from the {SDIST_REQUIREMENT} sdist (Unicode 15.1)",
        "letter": [list(r) for r in table.letter],
        "number": [list(r) for r in table.number],
        "punctuation": [list(r) for r in table.punctuation],
        "whitespace": list(table.whitespace),
    }
    OUTPUT.write_text(json.dumps(document, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(REPO)}: {len(table.letter)} letter, {len(table.number)} number, "
          f"{len(table.punctuation)} punctuation ranges, {len(table.whitespace)} whitespace codepoints")


if __name__ == "__main__":
    main()
