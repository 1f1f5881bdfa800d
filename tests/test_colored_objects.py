"""The Colored Objects generator: spans point at the right words, corrupted prompts line up token by token."""

from headwise.experiments.colored_objects import COLOURS, OBJECTS, make_items


def test_items_have_the_papers_shape_and_their_spans_name_the_distractors():
    assert len(COLOURS) == 8 and len(OBJECTS) == 17
    items = make_items(50, seed=3, tokens_of=lambda word: 1 + len(word) // 5)
    assert len(items) == 50 and items == make_items(50, seed=3, tokens_of=lambda word: 1 + len(word) // 5)
    for item in items:
        listed = item.text.split("\n\nQ: ")[1]
        assert all(f"a {colour} " in listed for colour in item.colours)
        named = sorted(item.text[start:end] for start, end in item.distractor_spans)
        assert named == sorted(c for i, c in enumerate(item.colours) if i != item.answer)
        question = item.text[item.question_span[0]:item.question_span[1]]
        assert question.startswith("What color is the ") and question.endswith("?")
        asked, other = question[len("What color is the "):-1], item.corrupted.rsplit("What color is the ", 1)[1][:-4]
        assert asked != other and 1 + len(asked) // 5 == 1 + len(other) // 5
        assert item.other != item.answer
