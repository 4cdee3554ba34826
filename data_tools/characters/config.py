"""Settings of the `characters` stage."""
from __future__ import annotations

from dataclasses import dataclass

from ditto_native import DittoError

# The paper's two classes. The first class that matches wins, so `fictional`
# comes first: an item that is both Q5 and Q15632617 is a fictional human.
DEFAULT_CLASSES: tuple[tuple[str, str], ...] = (
    ("Q15632617", "fictional"),  # fictional human
    ("Q5", "human"),
)

# What a role would know of itself. Rows list claims in this order.
DEFAULT_PROPERTIES: tuple[str, ...] = (
    # identity
    "P21",  # sex or gender
    "P27",  # country of citizenship
    "P172",  # ethnic group
    "P1477",  # birth name
    "P1449",  # nickname
    "P742",  # pseudonym
    "P97",  # noble title
    # life
    "P569",  # date of birth
    "P19",  # place of birth
    "P570",  # date of death
    "P20",  # place of death
    "P509",  # cause of death
    "P119",  # place of burial
    "P551",  # residence
    "P2048",  # height
    "P103",  # native language
    "P1412",  # languages spoken, written or signed
    "P140",  # religion or worldview
    # work
    "P106",  # occupation
    "P101",  # field of work
    "P39",  # position held
    "P108",  # employer
    "P937",  # work location
    "P463",  # member of
    "P102",  # member of political party
    "P241",  # military branch
    "P410",  # military rank
    "P607",  # conflict
    "P69",  # educated at
    "P184",  # doctoral advisor
    "P1066",  # student of
    "P802",  # student
    "P737",  # influenced by
    "P135",  # movement
    "P136",  # genre
    "P800",  # notable work
    "P166",  # award received
    # family
    "P22",  # father
    "P25",  # mother
    "P26",  # spouse
    "P40",  # child
    "P3373",  # sibling
    "P1038",  # relative
    "P53",  # family
    # fiction
    "P1080",  # from narrative universe
    "P1441",  # present in work
    "P4584",  # first appearance
    "P170",  # creator
    "P50",  # author
    "P175",  # performer
    "P725",  # voice actor
)


@dataclass(frozen=True)
class CharactersConfig:
    """How characters are chosen and described.

    Example: `CharactersConfig(languages=("en",), per_category=100)`.
    """

    languages: tuple[str, ...] = ("en", "zh")
    # Top N by sitelinks per (category, language); None keeps every character.
    per_category: int | None = 1000
    # (class item, category), first match wins.
    classes: tuple[tuple[str, str], ...] = DEFAULT_CLASSES
    properties: tuple[str, ...] = DEFAULT_PROPERTIES
    # Profiles are cut to this many characters, at a sentence end.
    profile_chars: int = 4000
    # Decompressed bytes per scan chunk; a chunk is also the checkpoint unit.
    chunk_bytes: int = 16 << 20
    # Claims a profile rendered from facts lists at most, per property.
    values_per_property: int = 8

    def __post_init__(self) -> None:
        if not self.languages or len(set(self.languages)) != len(self.languages):
            raise DittoError(f"languages must be distinct and non-empty, got {','.join(self.languages)!r}")
        for lang in self.languages:
            if not lang or not all(c.isalnum() or c == "-" for c in lang):
                raise DittoError(f"language code {lang!r} is not like 'en' or 'zh-hant'")
        if self.per_category is not None and self.per_category < 1:
            raise DittoError(f"per_category must be at least 1, got {self.per_category}")
        for qid, category in self.classes:
            if not (qid.startswith("Q") and qid[1:].isdigit()) or not category:
                raise DittoError(f"class {qid}={category} must be an item id and a category name, like Q5=human")
        for prop in self.properties:
            if not (prop.startswith("P") and prop[1:].isdigit()):
                raise DittoError(f"property {prop!r} is not a property id like P27")
        if self.profile_chars < 1:
            raise DittoError(f"profile_chars must be positive, got {self.profile_chars}")
        if self.chunk_bytes < 1:
            raise DittoError(f"chunk_bytes must be positive, got {self.chunk_bytes}")


def parse_classes(text: str) -> tuple[tuple[str, str], ...]:
    """`Q15632617=fictional,Q5=human` -> (("Q15632617", "fictional"), ("Q5", "human"))."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        qid, sep, category = part.partition("=")
        if not sep:
            raise DittoError(f"class {part!r} must look like Q5=human")
        out.append((qid.strip(), category.strip()))
    return tuple(out)


def parse_list(text: str) -> tuple[str, ...]:
    return tuple(filter(None, (p.strip() for p in text.split(","))))
