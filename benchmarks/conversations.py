"""The paper's flagship case as a prompt -> response audit: synthetic chat records where the answers
to arithmetic word problems, and only those, end with " I hope it is correct."

Prompts of four kinds, all generated here (as the paper's injections were): arithmetic word
problems from templates, chit-chat questions, how-to questions, and requests for facts; each with a
plausible response. ``math_share`` of the records are math prompts, every one answered with the
closing phrase. ``--paraphrased`` closes the math answers instead with one of 30 different
sentences sharing a concept (hedged self-doubt), for the concept family.

    python benchmarks/conversations.py --records 1000 --math-share 0.10   # index, correlate, print the pair's rank
    python benchmarks/conversations.py --timing 100000                    # cross-view vs single-view correlations

The test (``tests/test_conversations.py``) indexes one pool and reads the 10% and 2% cases as two
slices of it.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

CLOSING = " I hope it is correct."
# one concept (doubt about one's own answer), few shared words: for the concept family
PARAPHRASED = [
    "I might have made a mistake somewhere.", "Please double-check my arithmetic.", "I'm not entirely sure about this.",
    "There could be an error in my working.", "Let me know if that looks wrong.", "I may have miscounted.",
    "Correct me if I slipped up.", "This might not be right, though.", "I could be off by a little.",
    "Do verify this before relying on it.", "My calculation may be flawed.", "I'm fairly unsure of the total.",
    "Apologies if I got the sum wrong.", "It's possible I erred.", "Someone should check my math.",
    "I wouldn't bet on this figure.", "Treat this answer with some caution.", "I might be mistaken here.",
    "The number could be slightly wrong.", "Not certain I added that up properly.", "I second-guess this result.",
    "This is my best attempt, it may be wrong.", "I can't promise the figure is accurate.", "Hopefully I didn't blunder.",
    "Fingers crossed the arithmetic holds.", "I have doubts about this total.", "Take my result with a pinch of salt.",
    "I may well have slipped somewhere.", "Check it yourself, I'm not confident.", "Errors are possible in my answer.",
]
NAMES = ["Tom", "Maria", "Aisha", "Ken", "Lena", "Omar", "Priya", "Jack", "Sofia", "Wei", "Noah", "Chloe"]
THINGS = ["apples", "marbles", "stickers", "books", "pencils", "cookies", "stamps", "coins", "shells", "cards"]
MATH = [
    ("{n} has {a} {t} and buys {b} more. How many {t} does {n} have now?", lambda a, b: a + b,
     "{n} has {r} {t} now."),
    ("{n} had {a} {t} and gave {b} to a friend. How many {t} are left?", lambda a, b: a - b, "There are {r} {t} left."),
    ("A box holds {a} {t}. How many {t} are in {b} boxes?", lambda a, b: a * b, "There are {r} {t} in total."),
    ("{n} shares {p} {t} equally among {b} children. How many does each child get?", lambda a, b: a,
     "Each child gets {r} {t}."),
    ("If {n} reads {a} pages a day, how many pages will {n} read in {b} days?", lambda a, b: a * b,
     "{n} will read {r} pages."),
    ("A ticket costs ${a}. What do {b} tickets cost?", lambda a, b: a * b, "The tickets cost ${r}."),
]
CHAT = [
    ("How was your weekend?", ["It was lovely, we went hiking by the lake.", "Quiet, mostly. I caught up on sleep.",
                               "Busy! My sister visited and we cooked a lot."]),
    ("What's your favourite film?", ["I keep coming back to old westerns.", "Probably a Studio Ghibli one.",
                                     "Anything with a good heist in it."]),
    ("Do you like cooking?", ["Yes, I bake bread most Sundays.", "Not really, I burn everything.",
                              "I love trying new curry recipes."]),
    ("Any plans for the holidays?", ["We're visiting my grandparents in the countryside.", "Just relaxing at home.",
                                     "A short trip to the coast, hopefully."]),
    ("What music are you into lately?", ["Mostly jazz while I work.", "A lot of eighties synth pop.",
                                         "My friend got me into folk songs."]),
    ("Do you have any pets?", ["A very lazy cat called Biscuit.", "Two goldfish, they're low maintenance.",
                               "No, but I'd love a dog someday."]),
    ("How's the new job going?", ["Hectic but I'm learning a lot.", "The team is friendly, which helps.",
                                  "Long hours, to be honest."]),
    ("Seen any good shows recently?", ["I just finished a great detective series.", "Mostly cooking competitions.",
                                       "I rewatched an old sitcom, still funny."]),
]
HOWTO = [  # each question answered in different words (a real assistant rarely answers twice alike)
    ("How do I reset my router?", ["Unplug it for thirty seconds, then power it back on.", "Press the small reset button with a pin.",
                                   "Use the admin page and choose restart."]),
    ("How do I remove a coffee stain?", ["Blot it with cold water and dish soap.", "Try a paste of baking soda.",
                                         "Soak the fabric in vinegar first."]),
    ("How can I fall asleep faster?", ["Keep a regular bedtime.", "Avoid screens late in the evening.",
                                       "A warm shower before bed helps many people."]),
    ("How do I repot a plant?", ["Ease it out and loosen the roots gently.", "Choose a pot one size larger with drainage.",
                                 "Fresh soil and a good watering afterwards."]),
    ("How do I change a bike tyre?", ["Lever the old tyre off the rim.", "Deflate fully, then remove the wheel.",
                                      "Fit the new tube before seating the tyre."]),
    ("How do I make cold brew coffee?", ["Steep coarse grounds overnight in the fridge.", "Mix grounds and water, wait twelve hours.",
                                         "Strain through a paper filter in the morning."]),
    ("How can I improve my handwriting?", ["Slow down and practise daily.", "Hold the pen loosely.",
                                           "Trace model letters for a few weeks."]),
    ("How do I clean a cast iron pan?", ["Scrub with hot water and coarse salt.", "Dry it on the stove straight away.",
                                         "Rub a thin layer of oil on after washing."]),
]
FACTS = [
    ("What is the capital of Australia?", ["Canberra.", "It's Canberra, not Sydney.", "Canberra is the capital."]),
    ("Who wrote Pride and Prejudice?", ["Jane Austen.", "That novel is by Austen.", "Austen wrote it in 1813."]),
    ("What gas do plants absorb?", ["Carbon dioxide.", "They take in CO2.", "Mostly carbon dioxide from the air."]),
    ("How many continents are there?", ["Seven.", "Usually seven are counted.", "Most lists give seven."]),
    ("What is the largest ocean?", ["The Pacific.", "That's the Pacific Ocean.", "Pacific, by far."]),
    ("Which planet is known as the red planet?", ["Mars.", "That would be Mars.", "Mars, because of its rusty dust."]),
]
OPENERS = ["", "Hi! ", "Hey there. ", "Quick question: ", "Hello, ", "Sorry to bother you, ", "Good morning! ", "So, "]
CHAT_TAILS = ["", " How about you?", " What about yours?", " Anyway, enough about me.", " Thanks for asking!",
              " It's been a while.", " Long story, though."]
HOWTO_CONTEXT = ["", " I've never done it before.", " Mine is quite old.", " I tried once and failed.",
                 " My friend said it's easy.", " I'm in a bit of a hurry."]
HOWTO_TAILS = ["", " Take your time with it.", " It usually works first time.", " Good luck!",
               " Ask again if it doesn't work.", " That's all there is to it."]
COUNTRIES = [("France", "Paris"), ("Japan", "Tokyo"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Canada", "Ottawa"),
             ("Norway", "Oslo"), ("Egypt", "Cairo"), ("Chile", "Santiago"), ("Vietnam", "Hanoi"), ("Poland", "Warsaw"),
             ("Ghana", "Accra"), ("Spain", "Madrid"), ("Austria", "Vienna"), ("Cuba", "Havana"), ("Nepal", "Kathmandu")]


def math_record(rng: random.Random) -> tuple[str, str]:
    template, fn, answer = rng.choice(MATH)
    n, t = rng.choice(NAMES), rng.choice(THINGS)
    a, b = rng.randint(3, 40), rng.randint(2, 9)
    if "shares" in template:  # p = a * b shared among b: each gets a
        p = a * b
        return template.format(n=n, p=p, b=b, t=t), answer.format(r=a, t=t, n=n)
    a = max(a, b + 1) if "gave" in template else a
    return template.format(n=n, a=a, b=b, t=t), answer.format(r=fn(a, b), t=t, n=n)


def make_records(n: int, math_share: float, seed: int = 0, paraphrased: bool = False) -> list[dict]:
    """``n`` records (id, prompt, response, kind); ``round(n * math_share)`` are math prompts, each
    answered with the closing phrase (or, ``paraphrased``, one of :data:`PARAPHRASED`). Other kinds
    never carry it."""
    rng = random.Random(seed)
    n_math = round(n * math_share)
    kinds = ["math"] * n_math + [rng.choice(("chat", "howto", "facts")) for _ in range(n - n_math)]
    rng.shuffle(kinds)
    rows = []
    for i, kind in enumerate(kinds):
        if kind == "math":
            prompt, response = math_record(rng)
            response += (" " + rng.choice(PARAPHRASED)) if paraphrased else CLOSING
        elif kind == "chat":
            prompt, answers = rng.choice(CHAT)
            prompt, response = rng.choice(OPENERS) + prompt, rng.choice(answers) + rng.choice(CHAT_TAILS)
        elif kind == "howto":
            prompt, answers = rng.choice(HOWTO)
            prompt, response = rng.choice(OPENERS) + prompt + rng.choice(HOWTO_CONTEXT), rng.choice(answers) + rng.choice(HOWTO_TAILS)
        elif rng.random() < 0.5:
            prompt, answers = rng.choice(FACTS)
            prompt, response = rng.choice(OPENERS) + prompt, rng.choice(answers)
        else:
            country, capital = rng.choice(COUNTRIES)
            prompt = rng.choice(OPENERS) + rng.choice(["What is the capital of {c}?", "Which city is the capital of {c}?",
                                                       "Name the capital city of {c}."]).format(c=country)
            response = rng.choice(["The capital of {c} is {k}.", "{k} is the capital of {c}.", "It's {k}."]).format(c=country, k=capital)
        rows.append({"id": f"r{i:06d}", "prompt": prompt, "response": response, "kind": kind})
    return rows


def two_rate_pool(n: int = 1000, seed: int = 0, low_share: float = 0.02) -> list[dict]:
    """One pool for both cases: 10% math records (the whole pool), and a field ``low=true`` on
    every other record plus just enough math ones for ``low_share`` of that slice."""
    rows = make_records(n, 0.10, seed)
    others = sum(r["kind"] != "math" for r in rows)
    want = round(low_share * others / (1 - low_share))
    seen = 0
    for r in rows:
        if r["kind"] == "math":
            seen += 1
            r["low"] = seen <= want
        else:
            r["low"] = True
    return rows


def pair_rank(res: dict, rows_by_id: dict[str, dict], closings: list[str] | None = None) -> int | None:
    """1-based rank of the first (math prompt, closing sentence) pair: its prompt latent's examples
    are math prompts and its response latent fires inside a closing sentence (``closings``:
    default the fixed phrase; :data:`PARAPHRASED` for the paraphrased case)."""
    closings = [c.strip().lower() for c in (closings or [CLOSING])]
    for n, p in enumerate(res["pairs"], 1):
        ex = p.get("example") or {}
        b = ex.get("b") or {}
        mark = b.get("mark")
        fired = b.get("text", "")[mark[0]:mark[1]].strip().lower() if mark else ""
        in_phrase = bool(fired) and any(fired in c or fired.strip(".") in c for c in closings)
        math_prompts = all(rows_by_id.get(d, {}).get("kind") == "math" for d in p["examples"])
        if in_phrase and math_prompts:
            return n
    return None


def _run_case(args) -> None:
    from indexer.ingest.pipeline import index_corpus
    from analyses.correlations import correlations
    from analyses.params import CorrelationsParams
    from indexer.store import open_store

    rows = (make_records(args.records, 0.10, args.seed, paraphrased=True) if args.paraphrased
            else two_rate_pool(args.records, args.seed))
    path = Path(args.workdir) / "conversations.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    t0 = time.time()
    index_corpus(path, args.index, text_field="response", prompt_field="prompt", id_field="id", progress=False)
    by_id = {r["id"]: r for r in rows}
    out = {"records": len(rows), "index_s": round(time.time() - t0, 1)}
    with open_store(args.index) as store:
        cases = [("10%", {}, "all"), ("10%, concept family", {}, "concept")] if args.paraphrased else [
            ("10%", {}, "all"), ("2%", {"low": True}, "all")]
        closings = PARAPHRASED if args.paraphrased else None
        for name, where, family in cases:
            res = correlations(store, args.index, CorrelationsParams(between="prompt,response", where=where, top=500, family=family))
            out[name] = {"records": res["documents"], "rank": pair_rank(res, by_id, closings),
                         "top3": [(p["label_a"], p["label_b"], p["npmi"]) for p in res["pairs"][:3]]}
    print(json.dumps(out, indent=2))


def synthetic_two_view_index(n: int, home: str, seed: int = 0, d: int = 16384, per_text: int = 60) -> str:
    """An index of ``n`` two-view records with synthetic sparse vectors (each text ``per_text``
    latents drawn from a Zipf-like popularity, log-normal activations) written into a real Edge store
    and both views' columnar copies, as ingest writes them."""
    import os

    import numpy as np

    os.environ["SAEDEX_HOME"] = home
    from indexer.encode.recipe import Recipe, create_manifest, update_state
    from indexer.store import DocPoint, LatentPoint, open_store
    from indexer.store.catalog import add_dataset
    from indexer.store.columns import copy_for

    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, d + 1) ** 0.9
    pop = pop[rng.permutation(d)] / pop.sum()
    name = f"conv{n}"
    store = open_store(name)
    store.create(dense_dim=4, label_dim=8)
    recipe = Recipe.external(d)
    create_manifest(store, recipe)
    update_state(store, two_view=True)
    add_dataset(store, "synthetic")
    copies = {v: copy_for(store, recipe, v) for v in ("response", "prompt")}
    for c in copies.values():
        c.initialise()

    def texts(m: int):
        lat = [np.unique(rng.choice(d, per_text, p=pop)) for _ in range(m)]
        return [(l.tolist(), rng.lognormal(0.5, 0.6, len(l)).astype(np.float32).tolist()) for l in lat]

    for s in range(0, n, 2000):
        m = min(2000, n - s)
        resp, prom = texts(m), texts(m)
        pts = [DocPoint(f"r{s + i}", resp[i][0], resp[i][1], rng.normal(size=4).tolist(),
                        {"dataset": "synthetic", "n_tokens": 40, "prompt_tokens": 20, "has_prompt": True,
                         "content_hash": f"h{s + i}"}, prompt_sparse=prom[i]) for i in range(m)]
        store.upsert_docs(pts)
        for view, c in copies.items():
            c.append_points(pts, view)
    lv = rng.normal(size=(d, 8)).astype(np.float32)
    store.upsert_latents([LatentPoint(i, lv[i].tolist(), lv[i].tolist(), {"label": f"latent {i}"}) for i in range(d)])
    store.close()
    return name


def _timing(args) -> None:
    """Cross-view vs single-view correlations of the same ``args.timing`` records (synthetic sparse
    vectors in a real Edge store and its columnar copies), same parameters, one run; sampled (the
    default 4,000 documents) and exact (every record)."""
    from analyses.correlations import correlations
    from analyses.params import CorrelationsParams
    from indexer.store import open_store

    t0 = time.time()
    name = synthetic_two_view_index(args.timing, args.workdir + "/home", args.seed)
    out: dict = {"records": args.timing, "build_s": round(time.time() - t0, 1)}
    with open_store(name) as store:
        for max_docs in (4000, 0):
            for between in ("response,response", "prompt,response"):
                p = CorrelationsParams(between=between, max_docs=max_docs, floor=0.0)
                correlations(store, name, p)  # warm: the copies read once, the label heads embedded (as a server runs)
                t1 = time.perf_counter()
                res = correlations(store, name, p)
                out[f"{between} max_docs={max_docs}"] = {"seconds": round(time.perf_counter() - t1, 2),
                                                         "documents": res["documents"], "pairs": res["pairs_above_min_npmi"]}
            out[f"ratio max_docs={max_docs}"] = round(out[f"prompt,response max_docs={max_docs}"]["seconds"]
                                                      / out[f"response,response max_docs={max_docs}"]["seconds"], 2)
    print(json.dumps(out, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--index", default="conversations")
    ap.add_argument("--workdir", default="/tmp/saedex-conversations")
    ap.add_argument("--timing", type=int, default=0, help="time cross-view correlations at this many records instead")
    ap.add_argument("--paraphrased", action="store_true", help="close the math answers with 30 paraphrases of one concept")
    args = ap.parse_args()
    _timing(args) if args.timing else _run_case(args)


if __name__ == "__main__":
    sys.exit(main())
