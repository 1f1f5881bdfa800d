"""Train any headwise adapter with a plain Accelerate loop: one process, DDP over several, any device.

    python examples/train_accelerate.py --method lofit --out out/accelerate            # one process
    torchrun --nproc_per_node 2 examples/train_accelerate.py --method lofit --out ...  # DDP (gloo on CPU)
    accelerate launch examples/train_accelerate.py --method zerotuning --out ...       # on GPUs

``--model tiny`` (default) builds a small random Llama and a synthetic task, so the multi-process
tests run in seconds; any other ``--model`` (``smollm2`` for the bundled one, a bundled name, a Hub id or a
folder) trains on that model with a Function Vectors task (antonym; needs the reference data, $HEADWISE_DATA).
``--device cpu`` or ``cuda`` (Accelerate, Trainer and FSDP2 put each process on its own GPU), ``--dtype`` and
``--attn-implementation`` apply to either. The global batch is fixed (``--batch-size``, also
``--global-batch``): each of N processes gets ``--batch-size / N`` rows of every step.
Only the main process writes the checkpoint; every process writes its final adapter tensors and
losses to ``<out>/rank<i>.*`` so runs can be compared.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from safetensors.torch import save_file
from torch.utils.data import DataLoader

import headwise
from _model_args import add_model_arguments, load_model
from headwise.experiments.data import PaddingCollator, answer_only_example
from lofit import LofitConfig
from soft_injection import SoftInjectionConfig, set_task_embedding
from zerotuning import ZeroTuningConfig

CONFIGS = {
    "lofit": lambda: LofitConfig(heads="all"),
    "lofit_select": lambda: LofitConfig(heads="all", use_scale=True, use_offset=False, l1_lambda=1e-3),
    "soft_injection": lambda: SoftInjectionConfig(heads="all"),
    "zerotuning": lambda: ZeroTuningConfig(heads="all"),
}


def setup(args):
    """``(model, rows, pad id)`` on the CPU: the tiny model and its task, or ``--model`` with a Function Vectors task."""
    return tiny_setup(args) if args.model == "tiny" else model_setup(args)


def tiny_setup(args):
    """A small random Llama and a task: prompt (3 tokens + separator) -> 2 answer tokens."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    seed = args.seed
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=args.attn_implementation).to(getattr(torch, args.dtype))
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(64):
        prompt = torch.randint(10, 96, (3,), generator=g).tolist() + [3]
        rows.append(answer_only_example(prompt, [4 + prompt[0] % 4, 5]))
    return model, rows, 0


def model_setup(args):
    """``--model`` (``smollm2``: the bundled one) on the CPU and 256 rows of the antonym task."""
    from headwise.experiments.data import load_word_pairs, training_set

    name = "smollm2-135m-instruct" if args.model == "smollm2" else args.model
    model, tokenizer = load_model(argparse.Namespace(**{**vars(args), "model": name, "device": "cpu"}))
    rows = list(training_set(tokenizer, load_word_pairs("antonym", valid=0, test=0.1, seed=args.seed).train[:256]))
    return model, rows, tokenizer.pad_token_id


def last_token_loss(model, batch):
    """Soft injection's objective: CE of the first answer token at the last prompt position (left padding)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, -1].float()
    return F.cross_entropy(logits, batch["target"])


def first_answer_batches(rows, pad_id):
    """Rows -> (prompt, first answer token) pairs for soft injection, collated with left padding."""
    collate = PaddingCollator(pad_id, padding_side="left")

    def collator(features):
        prompts = [{"input_ids": [t for t, l in zip(f["input_ids"], f["labels"]) if l == -100]} for f in features]
        batch = collate(prompts)
        batch["target"] = torch.tensor([next(t for t in f["labels"] if t != -100) for f in features])
        return batch

    return collator


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--method", choices=sorted(CONFIGS), default="lofit")
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--lr", type=float, default=2e-2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine", choices=["accelerate", "trainer", "fsdp2"], default="accelerate",
                        help="a plain Accelerate loop, transformers.Trainer (LoFiT / ZeroTuning), or torch FSDP2")
    add_model_arguments(parser, batch_size=8, model="tiny")  # --model tiny: the small random Llama
    parser.add_argument("--global-batch", dest="batch_size", type=int, help=argparse.SUPPRESS)  # the earlier name
    args = parser.parse_args()
    if args.device != "cpu" and not args.device.startswith("cuda"):
        parser.error("--device must be cpu or cuda here (each process of a launch takes its own GPU)")
    if args.engine == "trainer":
        return train_with_trainer(args)
    if args.engine == "fsdp2":
        return train_with_fsdp2(args)

    # cpu=True: Accelerate then runs a torchrun launch as MULTI_CPU (gloo) instead of one process.
    accelerator = Accelerator(cpu=args.device == "cpu")
    model, rows, pad_id = setup(args)
    model = headwise.wrap(model, CONFIGS[args.method]())
    if args.method == "soft_injection":
        sites = headwise.find_head_sites(model)
        set_task_embedding(model, torch.randn(len(sites), sites[0].num_heads, sites[0].head_dim, generator=torch.Generator().manual_seed(args.seed)))
        collator = first_answer_batches(rows, pad_id)
    else:
        collator = PaddingCollator(pad_id)
    if args.batch_size % accelerator.num_processes:
        raise ValueError(f"--batch-size {args.batch_size} must divide by {accelerator.num_processes} processes")
    loader = DataLoader(rows, batch_size=args.batch_size // accelerator.num_processes, shuffle=False, collate_fn=collator)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    model.train()

    losses, step = [], 0
    while step < args.steps:
        for batch in loader:
            loss = last_token_loss(model, batch) if args.method == "soft_injection" else model(**batch).loss
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(accelerator.reduce(loss.detach(), reduction="mean").item())
            step += 1
            if step == args.steps:
                break

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    unwrapped = accelerator.unwrap_model(model)
    adapter = {n: p.detach().cpu().contiguous() for n, p in unwrapped.named_parameters() if p.requires_grad}
    save_file(adapter, out / f"rank{accelerator.process_index}.safetensors")
    wrote = False
    if accelerator.is_main_process:  # each rank names its own folder, so a test can see who wrote
        unwrapped.save_pretrained(out / f"rank{accelerator.process_index}" / "adapter")
        wrote = True
    (out / f"rank{accelerator.process_index}.json").write_text(json.dumps({
        "losses": losses, "wrote_checkpoint": wrote, "num_processes": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type),
    }))
    accelerator.wait_for_everyone()


def train_with_fsdp2(args) -> None:
    """FSDP2 (``fully_shard``) per decoder layer: holders shard with the layer they edit; the full
    adapter is gathered on rank 0 and saved there with ``save_pretrained``."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import fully_shard

    if args.method == "soft_injection":
        raise SystemExit("use the accelerate engine for soft injection (its own objective)")
    device = torch.device("cpu") if args.device == "cpu" else torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("gloo" if device.type == "cpu" else "nccl")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    rank, world = dist.get_rank(), dist.get_world_size()
    model, rows, pad_id = setup(args)
    model = headwise.wrap(model.to(device), CONFIGS[args.method]())
    for layer in model.get_base_model().model.layers:
        fully_shard(layer)
    fully_shard(model)
    # each rank holds only its shard of every adapter parameter (a DTensor): recorded for the test
    shards = {n: [list(p.to_local().shape), list(p.shape)] for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    collate, per_rank, losses = PaddingCollator(pad_id), args.batch_size // world, []
    for step in range(args.steps):
        start = (step * args.batch_size) % len(rows) + rank * per_rank
        loss = model(**{k: v.to(device) for k, v in collate(rows[start:start + per_rank]).items()}).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad()
        reduced = loss.detach().clone()
        dist.all_reduce(reduced)
        losses.append(reduced.item() / world)
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        plain, _, _ = setup(args)
        plain = headwise.wrap(plain, CONFIGS[args.method]())
        adapter = {k.removeprefix("base_model.model."): v for k, v in full.items() if "headwise_" in k}
        plain.load_state_dict({"base_model.model." + k: v for k, v in adapter.items()}, strict=False)
        plain.save_pretrained(out / f"rank{rank}" / "adapter")
        save_file({n: p.detach().contiguous() for n, p in plain.named_parameters() if p.requires_grad}, out / "rank0.safetensors")
    (out / f"rank{rank}.json").write_text(json.dumps({
        "losses": losses, "wrote_checkpoint": rank == 0, "num_processes": world, "distributed_type": "FSDP2",
        "shards": shards,
    }))
    dist.barrier()
    dist.destroy_process_group()


def train_with_trainer(args) -> None:
    """The same run through a plain ``transformers.Trainer`` (its sampler shuffles per process)."""
    import torch.distributed as dist
    from transformers import Trainer, TrainerCallback, TrainingArguments

    if args.method == "soft_injection":
        raise SystemExit("soft injection fits theta with its own objective (soft_injection.fit), not Trainer")
    model, rows, pad_id = setup(args)
    model = headwise.wrap(model, CONFIGS[args.method]())
    world = int(os.environ.get("WORLD_SIZE", 1))
    losses = []

    class RecordLoss(TrainerCallback):
        def on_log(self, _args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    training_args = TrainingArguments(
        output_dir=args.out, per_device_train_batch_size=args.batch_size // world, max_steps=args.steps,
        learning_rate=args.lr, weight_decay=0.0, lr_scheduler_type="constant", logging_steps=1, save_strategy="no",
        report_to=[], use_cpu=args.device == "cpu", seed=args.seed, remove_unused_columns=False, ddp_find_unused_parameters=False,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=rows, data_collator=PaddingCollator(pad_id),
                      callbacks=[RecordLoss()])
    trainer.train()
    out, rank = Path(args.out), trainer.args.process_index
    out.mkdir(parents=True, exist_ok=True)
    trainer.save_model(str(out / f"rank{rank}" / "adapter"))  # transformers writes on the main process only
    adapter = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_file(adapter, out / f"rank{rank}.safetensors")
    (out / f"rank{rank}.json").write_text(json.dumps({
        "losses": losses, "wrote_checkpoint": trainer.is_world_process_zero(), "num_processes": trainer.args.world_size,
        "distributed_type": str(trainer.accelerator.distributed_type),
    }))
    if dist.is_initialized():
        dist.barrier()


if __name__ == "__main__":
    main()
