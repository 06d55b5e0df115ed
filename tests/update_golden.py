"""Rewrite the golden files of ``tests/test_codegen_golden.py`` from the code emitted today.

Run ``python -m tests.update_golden`` from the repository root after an intended change to
the emitted code, then review the diff; the test itself only ever compares.
"""

from tests.test_codegen_golden import CASES, GOLDEN, emitted


def main() -> None:
    for name in sorted(CASES):
        path = GOLDEN / f"{name}.py"
        source = emitted(name)[2]
        changed = not path.exists() or path.read_text() != source
        path.write_text(source)
        print(f"{path}: {'rewritten' if changed else 'unchanged'}")


if __name__ == "__main__":
    main()
