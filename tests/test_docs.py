"""The docs are tested: every fenced Python block of README.md and docs/*.md runs (each file's blocks in
order, as one script, on the bundled model), and the architecture tables equal the code's."""

import pytest

from doc_blocks import EXTENDING, REPO, extending_method, python_blocks
from headwise.sites import architectures_table

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_the_docs_have_a_page_per_method_and_python_to_run():
    pages = {p.name for p in DOCUMENTS}
    assert {"lofit.md", "soft_injection.md", "zerotuning.md", "architectures.md"} <= pages
    assert len(python_blocks(REPO / "README.md")) >= 5


@pytest.mark.parametrize("path", [REPO / "README.md", REPO / "docs" / "architectures.md"], ids=lambda p: p.name)
def test_architecture_tables_are_generated_from_the_code(path):
    assert architectures_table() in path.read_text(encoding="utf-8"), (
        f"{path.name} drifted from headwise.sites.ARCHITECTURES: paste headwise.sites.architectures_table() into it"
    )


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in DOCUMENTS if python_blocks(p)], ids=lambda p: p.name)
def test_every_python_block_runs(path, tmp_path, monkeypatch, shared_data):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HEADWISE_DATA", str(shared_data))
    namespace = {"__name__": f"docs_{path.stem}"}
    blocks = list(enumerate(python_blocks(path), 1))
    if path == EXTENDING:  # its first block registers a method: run once per process, shared with test_extending
        namespace.update(extending_method())
        blocks = blocks[1:]
    for number, block in blocks:
        try:
            exec(compile(block, f"{path.name} python block {number}", "exec"), namespace)
        except Exception as error:  # name the block in the failure
            raise AssertionError(f"{path.name}, python block {number} failed: {type(error).__name__}: {error}") from error
