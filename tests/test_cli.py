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


def headwise_cli(*args, cwd, expect=0):
    env = {k: v for k, v in os.environ.items() if k != "HEADWISE_DATA"}  # a user's shell: no reference data
    result = subprocess.run(
        [sys.executable, "-m", "headwise.cli", "--quiet", *map(str, args)], capture_output=True, text=True,
        cwd=cwd, env=env, timeout=600,
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
    headwise_cli("train", "lofit", "--model", "base", "--data", "pairs.jsonl", "--out", "out-lofit", "--heads", "2",
                 "--epochs", "2", cwd=workspace)
    return workspace / "out-lofit"


def test_train_lofit_saves_an_adapter_with_its_card_task_file_and_heads_png(lofit_adapter):
    config = json.loads((lofit_adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LOFIT" and len(config["heads"]) == 2
    card = (lofit_adapter / "README.md").read_text()
    assert "LOFIT adapter" in card and "headwise.load_adapter_model" in card and "More Information Needed" not in card
    assert json.loads((lofit_adapter / "headwise_task.json").read_text())["template"] == "Q: {input}\nA:"
    assert (lofit_adapter / "heads.png").stat().st_size > 1000


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


def test_inspect_an_adapter_prints_its_heads_and_parameters_and_writes_the_png(workspace, lofit_adapter):
    result = headwise_cli("inspect", "out-lofit", "--png", "map.png", cwd=workspace)
    heads = sorted(json.loads((lofit_adapter / "adapter_config.json").read_text())["heads"])
    assert "LOFIT adapter for" in result.stdout
    assert f"heads: 2 of 12: L{heads[0][0]}.H{heads[0][1]}" in result.stdout
    assert "trainable parameters: 16;" in result.stdout  # two heads x head_dim 8 offsets
    assert (workspace / "map.png").stat().st_size > 1000


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
    (["eval", "out-lofit", "--model", "base", "--data", "missing.jsonl"], "missing.jsonl is not a data file"),
    (["eval", "out-lofit", "--model", "base", "--data", "antonym"], "HEADWISE_DATA"),
    (["train", "lofit", "--model", "base", "--data", "pairs.jsonl", "--out", "out-lofit"], "already holds an adapter"),
    (["train", "zerotuning", "--model", "base", "--data", "pairs.jsonl", "--out", "z2"], "classification data"),
    (["train", "lofit", "--model", "./no-such-model", "--data", "pairs.jsonl", "--out", "x"], "cannot load the model"),
    (["merge", "zt", "--model", "base", "--out", "zt-merged"], "ZeroTuning cannot be merged"),
    (["inspect", "./nowhere"], "no model or adapter at ./nowhere"),
    (["train", "lofit", "--model", "base", "--data", "pairs.jsonl", "--input-column", "query", "--out", "y"], "'query'"),
])
def test_user_mistakes_give_one_line_and_exit_status_2(workspace, lofit_adapter, args, message):
    if args[0] == "merge" and not (workspace / "zt").exists():
        headwise_cli("train", "zerotuning", "--model", "base", "--data", "reviews.csv", "--template", "Q: {text}\\nA:",
                     "--labels", "no", "yes", "--out", "zt", cwd=workspace)
    result = headwise_cli(*args, cwd=workspace, expect=2)
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("headwise: error: ") and message in lines[-1], result.stderr
    assert "Traceback" not in result.stderr


def test_help_of_every_subcommand_reads_like_the_readme():
    for command in ("train", "eval", "merge", "inspect"):
        result = subprocess.run([sys.executable, "-m", "headwise.cli", command, "--help"], capture_output=True, text=True, check=True)
        assert f"usage: headwise {command}" in result.stdout
