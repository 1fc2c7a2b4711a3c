"""The list of emoji the emoji data set draws: names, groups and the fixed held-out split.

Source: Unicode's ``emoji-test.txt`` (UTS #51), which Debian ships in the ``unicode-data`` package at
``/usr/share/unicode/emoji/emoji-test.txt``. Every ``fully-qualified`` line is one emoji (single code points,
skin-tone, ZWJ, keycap and flag sequences alike); its group is the ``# group:`` heading above it and its
caption the CLDR short name at the end of the line (``thumbs up: medium skin tone``). The ``Component`` group
(bare skin-tone and hair swatches) is left out, which leaves the nine emoji groups of :data:`GROUPS`.

The held-out split is a pure function of the emoji: ``sha256("emoji-split:" + family)`` where the family is
the code point sequence with skin-tone modifiers (U+1F3FB..U+1F3FF) removed, so every skin-tone variant of an
emoji lands on the same side (a held-out emoji is not seen in another skin tone during training). A family
is held out when the first 8 bytes of the hash, as a fraction of 2^64, are below ``heldout_fraction``.
Nothing here depends on the order of the file, the font or a random generator.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

EMOJI_TEST_PATH = Path("/usr/share/unicode/emoji/emoji-test.txt")
EMOJI_TEST_PACKAGE = "unicode-data"

# The nine Unicode emoji groups (as emoji-test.txt spells them) and the folder / class name of each.
GROUPS: dict[str, str] = {
    "Smileys & Emotion": "smileys-emotion",
    "People & Body": "people-body",
    "Animals & Nature": "animals-nature",
    "Food & Drink": "food-drink",
    "Travel & Places": "travel-places",
    "Activities": "activities",
    "Objects": "objects",
    "Symbols": "symbols",
    "Flags": "flags",
}
SKIPPED_GROUPS = ("Component",)
SKIN_TONES = frozenset(range(0x1F3FB, 0x1F400))
DEFAULT_HELDOUT_FRACTION = 0.1


class EmojiSourceMissing(FileNotFoundError):
    """emoji-test.txt is not where it was looked for."""


@dataclass(frozen=True)
class Emoji:
    """One fully-qualified emoji of emoji-test.txt."""

    codepoints: tuple[int, ...]
    name: str  # CLDR short name, e.g. "thumbs up: medium skin tone"
    group: str  # folder / class name, e.g. "people-body"
    subgroup: str  # e.g. "hand-fingers-closed"
    version: str  # emoji version that introduced it, e.g. "E1.0"

    @property
    def text(self) -> str:
        """The emoji as a string (what the font renders)."""
        return "".join(chr(c) for c in self.codepoints)

    @property
    def code(self) -> str:
        """Code points as file-name-safe hex, e.g. ``1f44d-1f3fd``."""
        return "-".join(f"{c:x}" for c in self.codepoints)

    @property
    def family(self) -> str:
        """The code points without skin-tone modifiers (all skin tones of one emoji share it)."""
        return "-".join(f"{c:x}" for c in self.codepoints if c not in SKIN_TONES)


def read_emoji_test(path: str | Path = EMOJI_TEST_PATH) -> list[Emoji]:
    """The fully-qualified emoji of the nine groups, in file (CLDR) order.

    Raises:
        EmojiSourceMissing: the file does not exist (the message names the Debian package).
        ValueError: the file holds no emoji of the nine groups (not an emoji-test.txt).
    """
    path = Path(path)
    if not path.is_file():
        raise EmojiSourceMissing(
            f"the emoji list {path} was not found. It comes with the Debian/Ubuntu package "
            f"'{EMOJI_TEST_PACKAGE}' (apt-get install {EMOJI_TEST_PACKAGE}); or pass the path of Unicode's "
            "emoji-test.txt with --emoji-test"
        )
    emoji: list[Emoji] = []
    group = subgroup = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
            continue
        if line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
            continue
        if line.startswith("#") or ";" not in line:
            continue
        fields, _, comment = line.partition("#")
        seq, status = (s.strip() for s in fields.split(";", 1))
        if status != "fully-qualified" or group in SKIPPED_GROUPS:
            continue
        if group not in GROUPS:
            raise ValueError(f"{path}: unknown emoji group {group!r} (expected one of {list(GROUPS)})")
        # comment: "<emoji> E<version> <name>"
        parts = comment.strip().split(" ", 2)
        if len(parts) != 3 or not parts[1].startswith("E"):
            raise ValueError(f"{path}: cannot read the name in line {line!r}")
        emoji.append(Emoji(tuple(int(c, 16) for c in seq.split()), parts[2].strip(), GROUPS[group], subgroup,
                           parts[1]))
    if not emoji:
        raise ValueError(f"{path} holds no fully-qualified emoji; is it Unicode's emoji-test.txt?")
    return emoji


def is_heldout(item: Emoji, heldout_fraction: float = DEFAULT_HELDOUT_FRACTION) -> bool:
    """Whether ``item`` belongs to the fixed held-out split (see the module docstring)."""
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    digest = hashlib.sha256(f"emoji-split:{item.family}".encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < heldout_fraction
