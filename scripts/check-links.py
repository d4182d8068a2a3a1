#!/usr/bin/env python3
"""Fails on a broken relative link or anchor in README.md and docs/*.md.

Usage: scripts/check-links.py [FILE.md ...]   (default: README.md and docs/*.md)

Checks Markdown links `[text](target)`, images, and HTML `src=`/`href=` attributes outside
code: a relative target must exist, and a `#fragment` must be a heading of the target file
as GitHub names it (lowercased, punctuation dropped, spaces to hyphens, `-1`, `-2` for
repeats). Links to other sites are not fetched (CI has no network for that, and a dead
external page is not this repository's defect). Prints one line per broken link and exits
1 if there is any, 0 otherwise.
"""

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKDOWN_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_LINK = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")
INLINE_CODE = re.compile(r"`[^`]*`")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: markup dropped, lowercased, punctuation removed."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = text.replace("`", "").lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def prose_lines(path: Path):
    """(line number, text) of the lines outside fenced code blocks."""
    in_fence = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            yield number, line


def anchors(path: Path) -> set:
    """Every heading anchor of a Markdown file, repeats numbered as GitHub numbers them."""
    seen = {}
    result = set()
    for _, line in prose_lines(path):
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def broken_links(path: Path):
    """(line number, target, reason) for each link of the file that does not resolve."""
    for number, line in prose_lines(path):
        text = INLINE_CODE.sub("", line)
        targets = MARKDOWN_LINK.findall(text) + HTML_LINK.findall(text)
        for target in targets:
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
                continue  # https:, mailto: and the like
            file_part, _, fragment = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                yield number, target, "no such file"
                continue
            if fragment and linked.suffix == ".md" and fragment not in anchors(linked):
                yield number, target, f"no heading #{fragment} in {os.path.relpath(linked, ROOT)}"


def main() -> int:
    files = [Path(arg).resolve() for arg in sys.argv[1:]] or [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
    ]
    failures = 0
    for path in files:
        for number, target, reason in broken_links(path):
            print(f"{os.path.relpath(path, ROOT)}:{number}: broken link {target}: {reason}")
            failures += 1
    checked = ", ".join(str(os.path.relpath(path, ROOT)) for path in files)
    print(f"check-links: {failures} broken in {len(files)} files ({checked})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
