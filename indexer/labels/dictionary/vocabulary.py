"""The concept vocabulary labels are chosen from: real lexical resources plus a curated taxonomy.

- ``taxonomy.tsv`` (written for saedex): styles, tones, registers, formats, speech acts,
  discourse moves, syntactic roles and broad topics, each with a one-line description.
- empath's lexical categories (PyPI ``empath``: ~200 categories, each a seed word list).
- WordNet 3.0 (Debian ``wordnet-base``, read from its database files): the most frequent sense of
  every sense-tagged lemma, plus the hypernyms above them (so a latent about socks, shoes and
  shirts can be "clothing", not only "sock").

Each concept is embedded from ``"name: description"``; the short name is the label users read.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.core.paths import saedex_home
from indexer.core.settings import settings

TAXONOMY = Path(__file__).with_name("taxonomy.tsv")
WORDNET_DIRS = ["/usr/share/wordnet", "/usr/local/WordNet-3.0/dict", "/usr/share/wordnet/dict"]


@dataclass(frozen=True)
class Concept:
    name: str  # the label: a short phrase
    text: str  # what gets embedded: "name: description"
    source: str  # taxonomy | empath | wordnet


def load_vocabulary(wordnet_min_tags: int = 3, hypernym_levels: int = 2) -> list[Concept]:
    """All concepts, deduplicated by name (taxonomy first: its descriptions are written for this)."""
    out: dict[str, Concept] = {}
    for c in taxonomy() + empath_categories() + wordnet_concepts(wordnet_min_tags, hypernym_levels):
        out.setdefault(c.name.lower(), c)
    return list(out.values())


def taxonomy() -> list[Concept]:
    return [c for cs in taxonomy_groups().values() for c in cs]


_taxonomy_vecs: dict[str, np.ndarray] = {}


def taxonomy_vectors(emb) -> np.ndarray:
    """Unit embeddings of :func:`taxonomy`'s concept texts by ``emb`` (rows in its order), computed
    once per embedder and kept on disk (keyed by embedder, precision and the texts): search centres
    query matching on them, label refresh offers them as labels. Computing them took a CLI search
    4 s of its start-up."""
    if emb.name not in _taxonomy_vecs:
        texts = [c.text for c in taxonomy()]
        key = hashlib.sha256(json.dumps([emb.name, getattr(emb, "precision", ""), texts]).encode()).hexdigest()[:24]
        path = saedex_home() / "cache" / f"taxonomy-{key}.npy"
        vecs = None
        try:
            vecs = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            pass
        if vecs is None or vecs.shape != (len(texts), emb.dim):
            vecs = emb.encode(texts)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.{os.getpid()}.npy")
                np.save(tmp, vecs)
                os.replace(tmp, path)
            except OSError:
                pass
        _taxonomy_vecs[emb.name] = vecs
    return _taxonomy_vecs[emb.name]


def taxonomy_groups() -> dict[str, list[Concept]]:
    """The taxonomy by group (topic, tone, register, format, speech act, discourse, syntax): the
    values an axis such as "news topic" or "tone" ranges over."""
    out: dict[str, list[Concept]] = {}
    for line in TAXONOMY.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, group, desc = line.split("\t")
        out.setdefault(group, []).append(Concept(name, f"{name}: {desc}", "taxonomy"))
    return out


def empath_categories() -> list[Concept]:
    """empath's categories from its data file (the package itself is not imported: it wants requests)."""
    spec = importlib.util.find_spec("empath")
    if spec is None or not spec.submodule_search_locations:
        return []
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "categories.tsv"
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        name = parts[0].replace("_", " ")
        words = list(dict.fromkeys(w.replace("_", " ") for w in parts[1:] if w))[:12]
        out.append(Concept(name, f"{name}: {', '.join(words)}", "empath"))
    return out


def wordnet_dir() -> Path | None:
    for d in [settings().wordnet_home or "", *WORDNET_DIRS]:
        if d and (Path(d) / "data.noun").exists():
            return Path(d)
    return None


_POS = {"n": "noun", "v": "verb", "a": "adj", "s": "adj", "r": "adv"}


def wordnet_concepts(min_tags: int = 3, hypernym_levels: int = 2) -> list[Concept]:
    """First senses of lemmas tagged >= ``min_tags`` times in SemCor, and their hypernyms."""
    root = wordnet_dir()
    if root is None:
        return []
    synsets: dict[tuple[str, str], tuple[list[str], str, list[str]]] = {}  # (pos, offset) -> (lemmas, gloss, hypernyms)
    for _, offset, ss_type, lemmas, gloss, pointers in _synsets(root):
        hyper = [off for sym, off, _, _ in pointers if sym in ("@", "@i")]
        synsets[(_POS[ss_type][0], offset)] = (lemmas, gloss.split(";")[0].strip(), hyper)
    chosen: set[tuple[str, str]] = set()
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (root / f"index.{pos}").read_text(encoding="utf-8", errors="replace").splitlines():
            if not line or line.startswith(" "):
                continue
            f = line.split()
            p_cnt = int(f[3])
            tagsense_cnt = int(f[5 + p_cnt])
            offsets = f[6 + p_cnt :]
            if tagsense_cnt >= 1 and offsets and _sense_tags(root, f[0], pos) >= min_tags:
                chosen.add((pos[0], offsets[0]))
    frontier = set(chosen)
    for _ in range(hypernym_levels):
        frontier = {(k[0], h) for k in frontier for h in synsets.get(k, ([], "", []))[2]} - chosen
        chosen |= frontier
    out = []
    for key in sorted(chosen):
        if key not in synsets:
            continue
        lemmas, gloss, _ = synsets[key]
        name = re.sub(r"\(.*?\)", "", lemmas[0]).replace("_", " ")
        syn = ", ".join(l.replace("_", " ") for l in lemmas[1:3])
        out.append(Concept(name, f"{name}{' (' + syn + ')' if syn else ''}: {gloss}", "wordnet"))
    return out


def _synsets(root: Path):
    """Every synset of WordNet's data files: (file pos, offset, synset type, lemmas as written,
    gloss, pointers as (symbol, offset, pos letter, source/target))."""
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (root / f"data.{pos}").read_text(encoding="utf-8", errors="replace").splitlines():
            if not line or line.startswith(" "):
                continue
            head, _, gloss = line.partition(" | ")
            f = head.split()
            w_cnt = int(f[3], 16)
            p = 4 + 2 * w_cnt
            pointers = [tuple(f[p + 1 + 4 * k : p + 5 + 4 * k]) for k in range(int(f[p]))]
            yield pos, f[0], f[2], [f[4 + 2 * i] for i in range(w_cnt)], gloss, pointers


_TAGS: dict[str, dict[str, int]] = {}


def _sense_tags(root: Path, lemma: str, pos: str) -> int:
    """SemCor tag count of a lemma's first sense (cntlist.rev), 0 if never tagged."""
    if not _TAGS:
        counts: dict[str, int] = {}
        path = root / "cntlist.rev"
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if path.exists() else []:
            f = line.split()
            if len(f) == 3 and f[1] == "1":
                key, _, rest = f[0].partition("%")
                counts[f"{key}%{rest[:1]}"] = counts.get(f"{key}%{rest[:1]}", 0) + int(f[2])
        _TAGS["all"] = counts
    ss = {"noun": "1", "verb": "2", "adj": "3", "adv": "4"}[pos]
    c = _TAGS["all"]
    return c.get(f"{lemma}%{ss}", 0) + (c.get(f"{lemma}%5", 0) if pos == "adj" else 0)


_ANTONYMS: dict[str, list[str]] = {}


def antonyms(word: str) -> frozenset[str]:
    """WordNet's antonyms of ``word`` in any part of speech ("negative" -> positive, neutral,
    affirmative; "praise" -> criticize), lower case; empty without WordNet.

    Why search needs them: a sentence embedder puts a word next to its opposite ("positive" and
    "negative" are both sentiment words), so a query for negative reviews matched latents of
    "positive". The table (~6,600 words, direct lexical antonym pointers only) takes 0.6 s to read
    from WordNet, so it is kept on disk beside the taxonomy vectors (a CLI search loads it in ms)."""
    if not _ANTONYMS:
        _ANTONYMS.update(_cached_antonym_table())
        _ANTONYMS.setdefault("", [])  # looked up once, even where WordNet is absent
    return frozenset(_ANTONYMS.get(word.lower(), ()))


def _cached_antonym_table() -> dict[str, list[str]]:
    root = wordnet_dir()
    if root is None:
        return {}
    stamp = hashlib.sha256(f"{root}:{(root / 'data.adj').stat().st_mtime_ns}".encode()).hexdigest()[:16]
    path = saedex_home() / "cache" / f"antonyms-{stamp}.json"
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(cached, dict):
            return cached
    except (OSError, ValueError):
        pass
    table = _antonym_table(root)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(table), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass
    return table


def _antonym_table(root: Path) -> dict[str, list[str]]:
    """Every lemma's antonyms from WordNet's data files ("!" pointers, word to word)."""
    lemmas: dict[tuple[str, str], list[str]] = {}
    pointers: list[tuple[str, str, str, str, str]] = []  # (pos, offset, target pos, target offset, source/target)
    for pos, offset, _, written, _, ptrs in _synsets(root):
        lemmas[(pos, offset)] = [re.sub(r"\(.*?\)", "", w).replace("_", " ").lower() for w in written]
        pointers += [(pos, offset, _POS[tpos], off, st) for sym, off, tpos, st in ptrs if sym == "!"]
    table: dict[str, set[str]] = {}
    for pos, off, tpos, toff, st in pointers:
        src, dst = lemmas[(pos, off)], lemmas.get((tpos, toff), [])
        s, t = int(st[:2], 16), int(st[2:], 16)
        for a in ([src[s - 1]] if 0 < s <= len(src) else src):
            table.setdefault(a, set()).update([dst[t - 1]] if 0 < t <= len(dst) else dst)
    return {w: sorted(v) for w, v in table.items()}
