"""The ``headwise`` command, run as a user runs it: a subprocess on a tiny model and data files."""

import csv
import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

import headwise
from tiny_models import tiny_model
from tiny_tokenizer import tiny_tokenizer


def headwise_cli(*args, cwd, expect=0, quiet=True):
    env = {k: v for k, v in os.environ.items() if k != "HEADWISE_DATA"}  # a user's shell: no reference data
    result = subprocess.run(
        [sys.executable, "-m", "headwise_cli", *(["--quiet"] if quiet else []), *map(str, args)], capture_output=True,
        text=True, cwd=cwd, env=env, timeout=600,
    )
    assert result.returncode == expect, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny Llama with its tokenizer, word pairs (JSONL) and a labelled CSV, as a user would have them."""
    folder = tmp_path_factory.mktemp("cli")
    model, tokenizer = tiny_model("llama"), tiny_tokenizer()
    model.save_pretrained(folder / "base")
    tokenizer.save_pretrained(folder / "base")
    with open(folder / "pairs.jsonl", "w") as handle:
        for i in range(40):
            handle.write(json.dumps({"input": f"w{i}", "output": f"w{(i + 40) % 80}"}) + "\n")
    with open(folder / "reviews.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows([f"w{i} w{i + 1}", "yes" if i % 2 else "no"] for i in range(24))
    return folder


@pytest.fixture(scope="module")
def lofit_adapter(workspace):
    result = headwise_cli("train", "lofit", "--model", "base", "--data", "pairs.jsonl", "--out", "out-lofit", "--heads", "2",
                          "--epochs", "2", cwd=workspace, quiet=False)
    (workspace / "lofit-train.log").write_text(result.stdout + "\n=== stderr\n" + result.stderr)
    return workspace / "out-lofit"


def test_train_lofit_saves_an_adapter_with_its_card_and_task_file_and_no_picture_unasked(workspace, lofit_adapter):
    config = json.loads((lofit_adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LOFIT" and len(config["heads"]) == 2
    card = (lofit_adapter / "README.md").read_text()
    assert "LOFIT adapter" in card and "headwise.load_adapter_model" in card and "More Information Needed" not in card
    assert json.loads((lofit_adapter / "headwise_task.json").read_text())["template"] == "Q: {input}\nA:"
    assert not list(lofit_adapter.glob("*.png")) and not list(workspace.glob("*.png"))


def test_train_shows_progress_of_both_phases_and_ends_with_a_table_not_trainer_dicts(workspace, lofit_adapter):
    stdout, stderr = (workspace / "lofit-train.log").read_text().split("\n=== stderr\n")
    for phase in ("LoFiT phase 1: head selection", "LoFiT phase 2: offsets"):
        assert phase in stderr
    assert "/40 [" in stderr and "<" in stderr  # the step count and tqdm's estimate of the time left
    assert "Phase 1: scales on all 12 heads, 40 steps (8 epochs), keeps 2 heads (16.7%)" in stderr
    assert "| step | work | time | result |" in stdout
    assert "| phase 1: select heads | 40 steps |" in stdout and "| phase 2: train offsets | 8 steps |" in stdout
    assert "{'" not in stdout + stderr and "eval_runtime" not in stdout + stderr


def test_eval_scores_the_adapter_beside_its_base_model(workspace, lofit_adapter):
    result = headwise_cli("eval", "out-lofit", "--model", "base", "--data", "pairs.jsonl", "--baseline", "--json", cwd=workspace)
    scores = json.loads(result.stdout)
    base = AutoModelForCausalLM.from_pretrained(workspace / "base")
    model = headwise.from_pretrained(base, str(lofit_adapter))
    from headwise.experiments.data import few_shot_prompt, load_word_pairs
    from headwise.experiments.evaluate import first_token_accuracy

    pairs = load_word_pairs(workspace / "pairs.jsonl", valid=0, test=0).train
    prompts, answers = [few_shot_prompt(p["input"]) for p in pairs], [p["output"] for p in pairs]
    expected = first_token_accuracy(model, tiny_tokenizer(), prompts, answers)
    assert scores["adapter"]["items"] == 40
    assert scores["adapter"]["first_token_accuracy"] == pytest.approx(expected)
    with model.disable_adapter():
        assert scores["base model"]["first_token_accuracy"] == pytest.approx(first_token_accuracy(model, tiny_tokenizer(), prompts, answers))


def test_merge_writes_a_checkpoint_that_transformers_loads_with_the_adapters_outputs(workspace, lofit_adapter):
    headwise_cli("merge", "out-lofit", "--model", "base", "--out", "merged", cwd=workspace)
    merged = AutoModelForCausalLM.from_pretrained(workspace / "merged")
    adapted = headwise.from_pretrained(AutoModelForCausalLM.from_pretrained(workspace / "base"), str(lofit_adapter))
    ids = torch.tensor([[5, 9, 17, 33, 60]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, adapted(ids).logits, atol=1e-5, rtol=1e-4)


def test_inspect_an_adapter_prints_its_heads_and_their_quantity_and_plots_only_when_asked(workspace, lofit_adapter):
    result = headwise_cli("inspect", "out-lofit", cwd=workspace)
    heads = sorted(json.loads((lofit_adapter / "adapter_config.json").read_text())["heads"])
    assert "LOFIT adapter for" in result.stdout
    assert f"heads: 2 of 12: L{heads[0][0]}.H{heads[0][1]}" in result.stdout
    assert "trainable parameters: 16;" in result.stdout  # two heads x head_dim 8 offsets
    assert "per head: offset RMS / the head's output RMS; largest: L" in result.stdout
    assert not list(workspace.glob("*.png"))
    headwise_cli("inspect", "out-lofit", "--plot", "pictures/map.png", cwd=workspace)
    assert (workspace / "pictures" / "map.png").stat().st_size > 1000


def test_inspect_a_saved_model_prints_its_head_sites(workspace):
    result = headwise_cli("inspect", "base", cwd=workspace)
    assert "llama: 3 layers x 4 query heads" in result.stdout


def test_soft_injection_trains_and_evaluates_from_the_shell(workspace):
    headwise_cli("train", "soft-injection", "--model", "base", "--data", "pairs.jsonl", "--out", "si", "--shots", "2",
                 "--prompts", "4", "--steps", "4", cwd=workspace)
    assert json.loads((workspace / "si" / "adapter_config.json").read_text())["peft_type"] == "SOFT_INJECTION"
    scores = json.loads(headwise_cli("eval", "si", "--model", "base", "--data", "pairs.jsonl", "--json", cwd=workspace).stdout)
    assert 0 <= scores["adapter"]["exact_match"] <= 1


def test_zerotuning_calibrates_on_a_csv_and_eval_reuses_its_prompt_format(workspace):
    headwise_cli("train", "zerotuning", "--model", "base", "--data", "reviews.csv", "--template", "Q: {text}\\nA:",
                 "--labels", "no", "yes", "--calibration", "supervised", "--out", "zt", cwd=workspace)
    task = json.loads((workspace / "zt" / "headwise_task.json").read_text())
    assert task["label_words"] == ["no", "yes"] and task["template"] == "Q: {text}\nA:"
    scores = json.loads(headwise_cli("eval", "zt", "--model", "base", "--data", "reviews.csv", "--json", cwd=workspace).stdout)
    assert scores["adapter"]["items"] == 24 and 0 <= scores["adapter"]["label_accuracy"] <= 1


@pytest.mark.parametrize("args, message", [
    (["eval", "out-lofit", "--model", "base", "--data", "missing.jsonl"], "--data missing.jsonl: no such file"),
    (["eval", "out-lofit", "--model", "base", "--data", "antonym"], "HEADWISE_DATA"),
    (["train", "lofit", "--model", "base", "--data", "pairs.jsonl", "--out", "out-lofit"], "already holds an adapter"),
    (["train", "zerotuning", "--model", "base", "--data", "pairs.jsonl", "--out", "z2"], "classification data"),
    (["train", "lofit", "--model", "./no-such-model", "--data", "pairs.jsonl", "--out", "x"], "cannot load the model"),
    (["merge", "si", "--model", "base", "--out", "si-merged"], "soft injection cannot be merged into weights: it mixes"),
    (["merge", "zt", "--model", "base", "--out", "zt-merged"], "ZeroTuning cannot be merged"),
    (["inspect", "./nowhere"], "no model or adapter at ./nowhere"),
    (["train", "lofit", "--model", "base", "--data", "pairs.jsonl", "--input-column", "query", "--out", "y"], "'query'"),
])
def test_user_mistakes_give_one_line_and_exit_status_2(workspace, lofit_adapter, args, message):
    if args[:2] == ["merge", "si"] and not (workspace / "si").exists():
        headwise_cli("train", "soft-injection", "--model", "base", "--data", "pairs.jsonl", "--out", "si", "--shots", "2",
                     "--prompts", "4", "--steps", "4", cwd=workspace)
    if args[:2] == ["merge", "zt"] and not (workspace / "zt").exists():
        headwise_cli("train", "zerotuning", "--model", "base", "--data", "reviews.csv", "--template", "Q: {text}\\nA:",
                     "--labels", "no", "yes", "--out", "zt", cwd=workspace)
    result = headwise_cli(*args, cwd=workspace, expect=2)
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"headwise {args[0]}: error: ") and message in lines[-1], result.stderr
    assert "Traceback" not in result.stderr


def test_help_of_every_subcommand_reads_like_the_readme():
    for command in ("train", "eval", "merge", "inspect"):
        result = subprocess.run([sys.executable, "-m", "headwise.cli", command, "--help"], capture_output=True, text=True, check=True)
        assert f"usage: headwise {command}" in result.stdout


HELP_PROBE = """
import json, sys
from headwise_cli import main
for argv in ([], ["train"], ["eval"], ["merge"], ["inspect"], ["train", "lofit", "--model", "m", "--data", "d",
             "--out", "o", "--lr", "-1"]):
    try:
        main([*argv, "--help"] if len(argv) < 2 else argv)
    except SystemExit:
        pass
heavy = sorted(name for name in ("torch", "transformers", "peft", "headwise", "numpy") if name in sys.modules)
print(json.dumps(heavy), file=sys.stderr)
"""


def test_help_and_argument_errors_answer_without_importing_torch_or_the_library():
    result = subprocess.run([sys.executable, "-c", HELP_PROBE], capture_output=True, text=True, timeout=60)
    assert json.loads(result.stderr.strip().splitlines()[-1]) == []
    assert "usage: headwise train" in result.stdout and "usage: headwise inspect" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["train", "lofit", "--lr", "-0.1"], "argument --lr: must be > 0, got -0.1"),
    (["train", "lofit", "--epochs", "0"], "argument --epochs: must be > 0, got 0"),
    (["train", "soft-injection", "--steps", "0"], "argument --steps: must be a whole number >= 1, got 0"),
    (["train", "lofit", "--valid", "1.5"], "argument --valid: must be a fraction between 0 and 1"),
    (["train", "lofit", "--heads", "2.5"], "argument --heads: give a fraction below 1"),
    (["train", "lofit", "--batch-size", "0"], "argument --batch-size: must be a whole number >= 1"),
    (["train", "zerotuning", "--gammas", "1", "-2"], "argument --gammas: must be > 0"),
    (["train", "lofit", "--data", "empty.jsonl"], "--data empty.jsonl is empty: give a file with at least one row"),
    (["train", "lofit", "--data", "nowhere.jsonl"], "--data nowhere.jsonl: no such file"),
    (["train", "lofit", "--output-column", "answer"], "has no column 'answer' (its rows have input, output): pass --output-column"),
    (["train", "zerotuning", "--data", "reviews.csv", "--template", "{review}", "--labels", "no", "yes"],
     "has no column 'review' (its rows have text, label): pass --template"),
    (["train", "lofit", "--model", "bert"], "--model bert is a BertForMaskedLM, not a decoder-only language model"),
    (["train", "lofit", "--heads", "1000"], "--heads 1000: the model has"),
    (["train", "soft-injection", "--data", "few.jsonl"], "soft injection needs more than --shots (10) rows"),
    (["eval", "out-lofit", "--model", "base", "--baseline", "few-shot=50"], "--baseline few-shot=50 draws 50"),
])
def test_argument_errors_exit_2_with_one_line_naming_the_flag_before_any_model_loads(workspace, lofit_adapter, args, message):
    if not (workspace / "bert").exists():
        from transformers import BertConfig, BertForMaskedLM

        config = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
        BertForMaskedLM(config).save_pretrained(workspace / "bert")
        (workspace / "empty.jsonl").write_text("")
        (workspace / "few.jsonl").write_text("".join(json.dumps({"input": f"a{i}", "output": f"b{i}"}) + "\n" for i in range(6)))
    defaults = {"--model": "base", "--data": "pairs.jsonl", "--out": "never"}
    if args[0] == "train":
        args = [*args, *(item for flag, value in defaults.items() if flag not in args for item in (flag, value))]
    else:
        args = [*args, *(item for flag in ("--data",) if flag not in args for item in (flag, defaults[flag]))]
    result = headwise_cli(*args, cwd=workspace, expect=2, quiet=False)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith(f"headwise {args[0]}: error: "), result.stderr
    assert "loading" not in result.stderr and not (workspace / "never").exists()


def test_eval_few_shot_baseline_with_shown_and_written_predictions(workspace, lofit_adapter):
    result = headwise_cli("eval", "out-lofit", "--model", "base", "--data", "pairs.jsonl", "--baseline", "few-shot=3",
                          "--baseline", "--show", "4", "--predictions", "predictions.jsonl", cwd=workspace)
    assert "| model | first token accuracy | exact match |" in result.stdout
    for name in ("| adapter |", "| base model, 3-shot |", "| base model |"):
        assert name in result.stdout
    assert "| input | expected | adapter | base model, 3-shot | base model |" in result.stdout
    shown = [line for line in result.stdout.splitlines() if line.startswith("| w")]
    assert len(shown) == 4
    rows = [json.loads(line) for line in (workspace / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 40
    for row in rows:
        assert row["prompt"] == f"Q: {row['input']}\nA:"
        assert row["expected"] == f"w{(int(row['input'][1:]) + 40) % 80}"
    scores = json.loads(headwise_cli("eval", "out-lofit", "--model", "base", "--data", "pairs.jsonl", "--baseline",
                                     "few-shot=3", "--json", cwd=workspace).stdout)
    for name in ("adapter", "base model, 3-shot"):
        assert scores[name]["exact_match"] == pytest.approx(sum(r[name]["correct"] for r in rows) / 40)


def test_few_shot_prompts_draw_k_other_rows_per_query():
    from headwise.cli.evaluate import _word_pair_items
    import argparse

    args = argparse.Namespace(data="rows", template=None, baseline=[("few-shot", 3)], seed=0, limit=None)
    pairs = [{"input": f"q{i}", "output": f"a{i}"} for i in range(8)]
    import headwise.cli.evaluate as evaluate

    original = evaluate.word_pairs
    evaluate.word_pairs = lambda _: pairs
    try:
        items = _word_pair_items(args, {})
    finally:
        evaluate.word_pairs = original
    prompts = items.few_shot[3]
    assert len(prompts) == 8 and len({p.split("\n\n")[0] for p in prompts}) > 1  # demonstrations vary per query
    for pair, prompt in zip(pairs, prompts):
        blocks = prompt.split("\n\n")
        assert len(blocks) == 4 and blocks[-1] == f"Q: {pair['input']}\nA:"
        assert all(f"Q: {pair['input']}\n" not in block for block in blocks[:-1])


@pytest.mark.parametrize("method", ["lofit", "soft_injection", "zerotuning", "gate"])
def test_each_methods_picture_shows_its_own_quantity_with_sign_and_unit(tmp_path, method):
    from headwise.cli.inspect import read_head_picture
    from tiny_models import adapted_tiny

    model = adapted_tiny(method)
    model.save_pretrained(tmp_path)
    picture = read_head_picture(tmp_path)
    values = picture.matrix[[l for l, _ in picture.heads], [h for _, h in picture.heads]]
    assert torch.isfinite(values).all() and len(values) == len(picture.heads)
    holders = {h.site.layer: h for h in model.base_model.holders_of("default")}
    layer, head = picture.heads[0]
    holder, index = holders[layer], holders[layer].head_index["default"].tolist().index(head)
    if method == "lofit":
        offset, unit = holder.offset("default")[index].detach(), holder.lofit_offset_unit["default"][index]
        assert "output RMS" in picture.label or "model units" in picture.label
        expected = offset.pow(2).mean().sqrt() / (unit if "output RMS" in picture.label else 1)
        assert values[0].item() == pytest.approx(float(expected), rel=1e-5) and not picture.signed
    elif method == "soft_injection":
        assert picture.label.startswith("alpha") and ((values >= 0) & (values <= 1)).all() and not picture.signed
        assert values[0].item() == pytest.approx(holder.alpha("default")[index].item(), rel=1e-5)
    elif method == "zerotuning":
        assert picture.label.startswith("ln gamma") and picture.signed
        assert values[0].item() == pytest.approx(holder.zerotuning_log_gamma["default"][index].item(), rel=1e-5)
    else:
        assert picture.label.startswith("gate a - 1") and picture.signed
        assert values[0].item() == pytest.approx(holder.gate_scale["default"][index].item() - 1, rel=1e-5)


def test_a_uniform_gamma_says_so_in_the_pictures_title(tmp_path):
    import headwise
    from zerotuning import ZeroTuningConfig

    headwise.wrap(tiny_model("llama"), ZeroTuningConfig(heads="all", gamma=1.5)).save_pretrained(tmp_path)
    from headwise.cli.inspect import read_head_picture

    assert read_head_picture(tmp_path).title() == "ZEROTUNING: 12 heads, all at 0.405"  # ln 1.5


def test_the_bundled_models_head_count_is_read_from_its_converted_config_when_there(tmp_path, monkeypatch):
    import headwise.experiments.bundled as bundled
    from headwise.cli.options import check_decoder
    from transformers import LlamaConfig

    monkeypatch.setattr(bundled, "cache_root", lambda: tmp_path)
    assert check_decoder("smollm2-135m-instruct") is None  # not converted yet: --heads is checked after loading
    LlamaConfig(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3).save_pretrained(tmp_path / "smollm2-135m-instruct")
    config = check_decoder("smollm2-135m-instruct")
    assert (config.num_hidden_layers, config.num_attention_heads) == (30, 9)
