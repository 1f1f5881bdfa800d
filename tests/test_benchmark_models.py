"""Every benchmark and example runs on the model the five model flags name (--model --device --dtype
--attn-implementation --batch-size): here a tiny random Llama saved to a folder, on the CPU, eager attention,
batch 2, at the smallest settings. Each must exit 0, a benchmark's JSON must name the folder (the flag was
used), and nothing may be written into the checkout (plots go to --out, JSON to --json, examples' out/ to
the working directory)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL_FLAGS = ["--device", "cpu", "--dtype", "float32", "--batch-size", "2"]  # and, unless OWN_MODEL, the two below
# these train their own small testbed: --model and --attn-implementation do not apply (and are refused)
OWN_MODEL = {"benchmarks/icl_regression.py", "examples/icl_regression.py"}
NO_PLOT = {"benchmarks/train_cost.py"}  # benchmarks without a plot, so without --out

# (script, its smallest settings): benchmarks also get --json and --out (plots) in a temporary folder
CASES = [
    ("benchmarks/soft_injection_vs_icl.py", ["--quick", "--steps", "2", "--eval-every", "2", "--n-prompts", "2", "--n-valid", "4",
                                            "--n-test", "6", "--seeds", "0", "1", "--lrs", "0.2", "0.6", "--also", "lora", "lofit"]),
    ("benchmarks/lofit_vs_peft.py", ["--quick", "--n-train", "12", "--n-valid", "4", "--n-test", "6", "--epochs", "1",
                                     "--min-steps", "2", "--seeds", "0", "1", "--sweep", "1", "3",
                                     "--study", "--rows", "LoRA", "LoFiT 10% heads$", "raw offsets"]),
    ("benchmarks/zerotuning_classification.py", ["--quick", "--n-dev", "4", "--n-test", "6", "--n-train", "8", "--seeds", "0",
                                                 "--initial-tokens", "prompt", "bos", "--resume", "run.jsonl"]),
    ("benchmarks/overhead.py", ["--quick", "--length", "16"]),
    ("benchmarks/train_cost.py", ["--quick", "--length", "16"]),
    ("benchmarks/scaling.py", ["--repeats", "1", "--length", "64"]),
    ("benchmarks/circuit_reuse.py", ["--seeds", "0", "--items", "24", "--patch-items", "6", "--candidates", "2", "--max-heads", "2"]),
    ("benchmarks/factual_recall.py", ["--seeds", "0", "--heads", "2", "--last-layers", "2", "--gate-steps", "2"]),
    ("benchmarks/mixed_batches.py", ["--quick", "--adapters", "32", "--seeds", "0", "--rows", "4"]),
    ("benchmarks/icl_regression.py", ["--seeds", "0", "--steps", "20", "--samples", "500", "--gate-steps", "5"]),
    ("examples/circuit_reuse.py", ["--head", "1", "0", "--items", "12"]),
    ("examples/factual_recall.py", ["--n-train", "6", "--heads", "2"]),
    ("examples/lofit_demo.py", ["--epochs", "1"]),
    ("examples/lofit_two_phases.py", ["--n-train", "10", "--n-test", "6", "--min-steps", "2", "--epochs", "1", "--k", "2"]),
    ("examples/soft_injection_demo.py", ["--steps", "2", "--n-prompts", "2", "--n-valid", "4", "--n-test", "6"]),
    ("examples/train_accelerate.py", ["--out", "accelerate", "--steps", "2"]),
    ("examples/zerotuning_sst2.py", ["--n-dev", "4", "--n-test", "6"]),
    ("examples/icl_regression.py", ["--steps", "20", "--gate-steps", "5", "--samples", "500"]),
    ("examples/serve_many_tasks.py", ["--demo", "--tasks", "antonym", "--requests", "8", "--clients", "2", "--max-new-tokens", "2"]),
]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Llama (2 layers, 4 heads, 2 kv heads) with the bundled tokenizer, saved to a folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from headwise.experiments.bundled import bundled_model_path

    tokenizer = AutoTokenizer.from_pretrained(bundled_model_path())
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def checkout_state() -> set[str]:
    """What git sees changed or untracked in the checkout, and the files under its ignored output folders."""
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.splitlines()
    outputs = [str(p.relative_to(ROOT)) for folder in ("out", "benchmarks/out") for p in (ROOT / folder).rglob("*")]
    return set(status) | set(outputs)


@pytest.mark.slow
@pytest.mark.parametrize("script, arguments", CASES, ids=[script for script, _ in CASES])
def test_runs_on_the_model_the_flags_name(script, arguments, tiny_model_dir, shared_data, tmp_path):
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing to compare the checkout against")
    command = [sys.executable, str(ROOT / script), *arguments, *MODEL_FLAGS]
    if script not in OWN_MODEL:
        command += ["--model", str(tiny_model_dir), "--attn-implementation", "eager"]
    result_json = tmp_path / "result.json"
    if script.startswith("benchmarks/"):
        command += ["--json", str(result_json)] + ([] if script in NO_PLOT else ["--out", str(tmp_path / "plots")])
    env = {**os.environ, "HEADWISE_DATA": str(shared_data), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1",
           "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    before = checkout_state()
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"{' '.join(command)}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    assert sorted(checkout_state() - before) == [], f"{script} wrote into the checkout"
    if script.startswith("benchmarks/"):
        text = result_json.read_text()
        if script not in OWN_MODEL:
            assert str(tiny_model_dir) in text, "the JSON does not name the --model folder"
    if "--resume" in arguments:  # a second run reads every result back from the file and builds the same tables
        again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "scored" not in again.stdout, "the resumed run computed again"
        assert json.loads(result_json.read_text())["rows"] == json.loads(text)["rows"]
    if script == "benchmarks/lofit_vs_peft.py":  # --rows are regular expressions: '$' keeps the other study rows out
        trained = {label for label in json.loads(text)["runs"]["0"]["country-capital"] if label.startswith(("PEFT", "LoFiT"))}
        assert trained == {"PEFT LoRA r=8 (q,v)", "LoFiT 10% heads", "LoFiT 10% heads, raw offsets (paper)"}
        assert "LoFiT 10% heads, raw offsets (paper) / LoFiT 10% heads / exact match" in json.loads(text)["comparisons"]


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(OWN_MODEL))
def test_own_model_scripts_refuse_the_model_flags(script):
    run = subprocess.run([sys.executable, str(ROOT / script), "--model", "elsewhere"], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 2 and "--model does not apply" in run.stderr, run.stderr[-2000:]
