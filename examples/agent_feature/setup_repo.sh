#!/usr/bin/env bash
# Create the scratch git repository the agent_feature example works in.
#   bash examples/agent_feature/setup_repo.sh /tmp/textkit
set -euo pipefail
dir=${1:?usage: setup_repo.sh DIR (created; must not be a git repository yet)}
if [ -e "$dir/.git" ]; then
    echo "setup_repo.sh: $dir is already a git repository; pick a new directory" >&2
    exit 2
fi
mkdir -p "$dir"
cd "$dir"
git init -q

cat > textkit.py <<'PY'
"""Small text helpers."""


def title_words(text: str) -> str:
    """Capitalize every word."""
    return " ".join(word.capitalize() for word in text.split())
PY

cat > test_textkit.py <<'PY'
import unittest

from textkit import title_words


class TitleWordsTest(unittest.TestCase):
    def test_capitalizes_each_word(self):
        self.assertEqual(title_words("hello big world"), "Hello Big World")


if __name__ == "__main__":
    unittest.main()
PY

printf '__pycache__/\n' > .gitignore
git add -A
git -c user.name=setup -c user.email=setup@example.invalid commit -q -m "textkit: title_words"
echo "scratch repository ready: $dir" >&2
