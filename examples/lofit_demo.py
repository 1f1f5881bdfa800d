"""LoFiT on SmolLM2-135M-Instruct in a few minutes on a CPU (or on any decoder: --model).

The task: answer a country's capital to a zero-shot prompt "Q: <country>\nA:". The untuned model
knows many capitals but rarely answers in this format; LoFiT trains one offset vector per chosen
head (a few hundred parameters) with a plain transformers.Trainer and is scored on held-out countries.

    python examples/lofit_demo.py          (or: make demo)
    python examples/lofit_demo.py --model meta-llama/Llama-3.1-8B --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import logging
import random
import time

import headwise  # first: PEFT then comes in without bitsandbytes (transformers' Trainer imports PEFT too)
import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from _model_args import add_model_arguments, load_model, trainer_device
from headwise.experiments.data import QA_TEMPLATE, PaddingCollator, encode_pair
from headwise.experiments.evaluate import first_token_accuracy, greedy_exact_match
from lofit import LofitConfig, offset_units_from_data, set_offset_units

# The demo's own data: (country, capital).
CAPITALS = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Portugal", "Lisbon"),
    ("Japan", "Tokyo"), ("China", "Beijing"), ("Russia", "Moscow"), ("Egypt", "Cairo"), ("Greece", "Athens"),
    ("Austria", "Vienna"), ("Poland", "Warsaw"), ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Finland", "Helsinki"),
    ("Denmark", "Copenhagen"), ("Ireland", "Dublin"), ("Belgium", "Brussels"), ("Netherlands", "Amsterdam"),
    ("Hungary", "Budapest"), ("Czech Republic", "Prague"), ("Romania", "Bucharest"), ("Bulgaria", "Sofia"),
    ("Serbia", "Belgrade"), ("Croatia", "Zagreb"), ("Ukraine", "Kyiv"), ("Turkey", "Ankara"), ("Iran", "Tehran"),
    ("Iraq", "Baghdad"), ("Syria", "Damascus"), ("Lebanon", "Beirut"), ("Jordan", "Amman"), ("Israel", "Jerusalem"),
    ("Saudi Arabia", "Riyadh"), ("India", "New Delhi"), ("Pakistan", "Islamabad"), ("Bangladesh", "Dhaka"),
    ("Nepal", "Kathmandu"), ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"), ("Indonesia", "Jakarta"),
    ("Philippines", "Manila"), ("Malaysia", "Kuala Lumpur"), ("South Korea", "Seoul"), ("Mongolia", "Ulaanbaatar"),
    ("Australia", "Canberra"), ("New Zealand", "Wellington"), ("Canada", "Ottawa"), ("Mexico", "Mexico City"),
    ("Cuba", "Havana"), ("Peru", "Lima"), ("Chile", "Santiago"), ("Argentina", "Buenos Aires"), ("Colombia", "Bogota"),
    ("Venezuela", "Caracas"), ("Ecuador", "Quito"), ("Kenya", "Nairobi"), ("Ethiopia", "Addis Ababa"),
    ("Nigeria", "Abuja"), ("Ghana", "Accra"), ("Morocco", "Rabat"), ("Algeria", "Algiers"), ("Tunisia", "Tunis"),
    ("Senegal", "Dakar"), ("Uganda", "Kampala"), ("Zimbabwe", "Harare"), ("Iceland", "Reykjavik"),
    ("Switzerland", "Bern"), ("Afghanistan", "Kabul"), ("Qatar", "Doha"),
]

# A few heads of the middle and late layers; `lofit.select_heads` chooses them from data instead.
LAYER_SHARES = (0.27, 0.37, 0.47, 0.57, 0.67, 0.77)  # on SmolLM2's 30 layers: 8, 11, 14, 17, 20, 23


def demo_heads(model) -> list[tuple[int, int]]:
    """Heads first, middle and last of six layers spread over the middle of the model (on SmolLM2-135M: layers
    8, 11, ..., 23, heads 0, 4, 8)."""
    sites = headwise.find_head_sites(model)
    layers, heads = len(sites), sites[0].num_heads
    return [(layer, head) for layer in sorted({int(layers * share) for share in LAYER_SHARES})
            for head in sorted({0, heads // 2, heads - 1})]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=5)
    add_model_arguments(parser, batch_size=8)  # the training batch; scoring runs twice as many rows
    options = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)
    start = time.time()
    model, tokenizer = load_model(options)
    chosen = demo_heads(model)
    pairs = CAPITALS[:]
    random.Random(0).shuffle(pairs)
    train, test = pairs[:45], pairs[45:]
    prompts = [QA_TEMPLATE.format(input=country) for country, _ in test]
    answers = [capital for _, capital in test]

    def score(m) -> tuple[float, float]:
        m.eval()
        rows = 2 * options.batch_size  # no gradients: twice the training batch (16 by default)
        return (first_token_accuracy(m, tokenizer, prompts, answers, batch_size=rows),
                greedy_exact_match(m, tokenizer, prompts, answers, batch_size=rows))

    before = score(model)
    model = headwise.wrap(model, LofitConfig(heads=chosen))
    model.print_trainable_parameters()
    data = Dataset.from_list([encode_pair(tokenizer, QA_TEMPLATE.format(input=c), a) for c, a in train])
    # Offsets in units of each head's output RMS: one learning rate then means the same for every head.
    set_offset_units(model, offset_units_from_data(model, data, tokenizer.pad_token_id))
    args = TrainingArguments(
        output_dir="out/lofit_demo", per_device_train_batch_size=options.batch_size, num_train_epochs=options.epochs,
        learning_rate=0.2, lr_scheduler_type="linear", weight_decay=0.0, max_grad_norm=1.0, save_strategy="no", report_to=[],
        logging_steps=10, seed=0, remove_unused_columns=False, disable_tqdm=True, **trainer_device(options),
    )
    Trainer(model=model, args=args, train_dataset=data, data_collator=PaddingCollator(tokenizer.pad_token_id)).train()
    after = score(model)

    print(f"\nLoFiT on {len(chosen)} heads of {options.model}, {len(train)} training / {len(test)} held-out countries")
    print("| model | first-token acc | greedy exact match |")
    print("|---|---|---|")
    print(f"| untuned 0-shot | {before[0]:.2f} | {before[1]:.2f} |")
    print(f"| LoFiT offsets  | {after[0]:.2f} | {after[1]:.2f} |")
    print(f"({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
