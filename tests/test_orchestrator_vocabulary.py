"""The orchestrator names no task and no task's knowledge: what a task decides, exports, serves and sweeps is
the task's to say (trainables/tasks/). Imports run one way: orchestrator -> search_spaces -> trainables."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASK_WORDS = re.compile(r"threshold|celeba|fairface|recognition", re.IGNORECASE)


def lines_matching(folder: str, pattern: re.Pattern) -> list[str]:
    found = []
    for path in sorted((ROOT / folder).rglob("*")):
        if path.is_file() and path.suffix in (".py", ".html", ".js", ".css", ".md", ".txt", ".yaml", ".json"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    return found


def test_the_orchestrator_says_no_tasks_words():
    """Not in code, not in help text, not on the served page: `grep -rniE "threshold|celeba|fairface|recognition"
    orchestrator/` finds nothing."""
    assert lines_matching("orchestrator", TASK_WORDS) == []


def test_nothing_below_the_orchestrator_imports_it():
    imports = re.compile(r"^\s*(from|import)\s+orchestrator\b")
    assert lines_matching("trainables", imports) + lines_matching("search_spaces", imports) == []
