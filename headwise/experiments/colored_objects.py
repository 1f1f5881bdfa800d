"""The Colored Objects task as the circuit-reuse paper (Merullo, Eickhoff, Pavlick, ICLR 2024) describes it:
one-shot prompts listing 3 coloured objects (8 colours, 17 objects), asking for one object's colour, with
the character spans an intervention needs (the distractor colours, the question) and a corrupted prompt
that asks about another object of as many tokens (for activation patching)."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["COLOURS", "OBJECTS", "ColoredObjectsItem", "make_items"]

COLOURS = ["red", "orange", "yellow", "green", "blue", "purple", "black", "white"]  # 8, one token each
OBJECTS = ["pen", "pencil", "cup", "mug", "jug", "plate", "notebook", "keychain", "necklace", "bracelet", "scarf",
           "hat", "ball", "phone", "lamp", "bottle", "box"]  # 17, some of several tokens


@dataclass
class ColoredObjectsItem:
    text: str
    colours: list[str]  # the query list's colours, in order
    answer: int  # index into colours
    other: int  # the object a corrupted prompt asks about instead
    distractor_spans: list[tuple[int, int]]  # character ranges of the two other colours in the query list
    question_span: tuple[int, int]  # "What color is the <object>?"
    corrupted: str


def _listing(rng: random.Random) -> tuple[list[str], list[str]]:
    return rng.sample(OBJECTS, 3), rng.sample(COLOURS, 3)


def _sentence(objects, colours) -> str:
    return f"On the table, I see a {colours[0]} {objects[0]}, a {colours[1]} {objects[1]}, and a {colours[2]} {objects[2]}."


def make_items(count: int, seed: int, tokens_of=len) -> list[ColoredObjectsItem]:
    """One-shot prompts: a solved example, then the query list and its question (3 objects, 8 colours, 17 objects).
    The corrupted prompt asks about another listed object of as many tokens (``tokens_of``), so both prompts
    line up position by position."""
    rng = random.Random(seed)
    out = []
    while len(out) < count:
        demo_objects, demo_colours = _listing(rng)
        asked = rng.randrange(3)
        demo = f"Q: {_sentence(demo_objects, demo_colours)} What color is the {demo_objects[asked]}?\nA: {demo_colours[asked]}\n\n"
        objects, colours = _listing(rng)
        answer = rng.randrange(3)
        others = [i for i in range(3) if i != answer and tokens_of(objects[i]) == tokens_of(objects[answer])]
        if not others:
            continue
        other = rng.choice(others)
        head = f"{demo}Q: {_sentence(objects, colours)} "
        question = f"What color is the {objects[answer]}?"
        text = f"{head}{question}\nA:"
        corrupted = f"{head}What color is the {objects[other]}?\nA:"
        list_start = len(demo) + 3
        spans = []
        search_from = list_start
        for index, colour in enumerate(colours):
            start = text.index(f" {colour} ", search_from) + 1
            search_from = start + len(colour)
            if index != answer:
                spans.append((start, start + len(colour)))
        out.append(ColoredObjectsItem(text, colours, answer, other, spans, (len(head), len(head) + len(question)), corrupted))
    return out
