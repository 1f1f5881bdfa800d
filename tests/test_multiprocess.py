"""Two-process DDP (torchrun, gloo on CPU) with a plain Accelerate loop, for every method."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "train_accelerate.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def written_by(out: Path, processes: int) -> list[bool]:
    """Which ranks wrote an adapter folder (each rank is given its own folder name)."""
    return [(out / f"rank{r}" / "adapter" / "adapter_model.safetensors").exists() for r in range(processes)]


def launch(method: str, out: Path, processes: int, engine: str = "accelerate") -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    if processes == 1:
        command = [sys.executable, str(SCRIPT)]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                   "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(SCRIPT)]
    arguments = ["--method", method, "--out", str(out), "--engine", engine]
    result = subprocess.run(command + arguments, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(processes)]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lofit", "lofit_select", "soft_injection", "zerotuning"])
def test_two_processes_equal_one_with_the_same_global_batch(method, tmp_path):
    single = launch(method, tmp_path / "one", 1)[0]
    ranks = launch(method, tmp_path / "two", 2)
    assert [r["distributed_type"] for r in ranks] == ["DistributedType.MULTI_CPU"] * 2
    losses = ranks[0]["losses"]  # 64 rows / global batch 8: steps 8.. revisit the batches of steps 0..
    assert sum(losses[8:12]) < sum(losses[0:4])  # the loss on the same batches goes down
    assert written_by(tmp_path / "two", 2) == [True, False]  # only the main process writes
    assert ranks[0]["losses"] == pytest.approx(single["losses"], abs=1e-5)
    rank0, rank1 = load_file(tmp_path / "two" / "rank0.safetensors"), load_file(tmp_path / "two" / "rank1.safetensors")
    alone = load_file(tmp_path / "one" / "rank0.safetensors")
    assert rank0.keys() == rank1.keys() == alone.keys() and rank0
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name  # identical on both ranks
        assert torch.allclose(rank0[name], alone[name], atol=1e-5), name
    saved = load_file(tmp_path / "two" / "rank0" / "adapter" / "adapter_model.safetensors")
    assert len(saved) >= len(rank0)  # soft injection also saves its task embedding


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lofit", "zerotuning"])
def test_plain_trainer_under_torchrun(method, tmp_path):
    """Trainer's sampler shuffles per process, so runs are compared with themselves, not with one process."""
    ranks = launch(method, tmp_path, 2, engine="trainer")
    assert [r["distributed_type"] for r in ranks] == ["DistributedType.MULTI_CPU"] * 2
    assert written_by(tmp_path, 2) == [True, False]
    losses = ranks[0]["losses"]
    assert sum(losses[-4:]) < sum(losses[:4])
    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert rank0 and all(torch.equal(rank0[n], rank1[n]) for n in rank0)
    assert (tmp_path / "rank0" / "adapter" / "adapter_model.safetensors").exists()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lofit", "zerotuning"])
def test_fsdp2_on_cpu_gathers_the_full_adapter_and_equals_one_process(method, tmp_path):
    single = launch(method, tmp_path / "one", 1)[0]
    ranks = launch(method, tmp_path / "fsdp", 2, engine="fsdp2")
    assert written_by(tmp_path / "fsdp", 2) == [True, False]
    for name, (local, full) in ranks[0]["shards"].items():  # really sharded, not replicated
        other_local, _ = ranks[1]["shards"][name]
        assert local[0] + other_local[0] == full[0] and local[1:] == full[1:], name
        assert local[0] < full[0] or full[0] == 1, name
    assert ranks[0]["losses"] == pytest.approx(single["losses"], abs=1e-5)
    gathered, alone = load_file(tmp_path / "fsdp" / "rank0.safetensors"), load_file(tmp_path / "one" / "rank0.safetensors")
    assert gathered.keys() == alone.keys() and gathered
    for name in alone:  # full, unsharded shapes, same values
        assert gathered[name].shape == alone[name].shape
        assert torch.allclose(gathered[name], alone[name], atol=1e-5), name
    saved = load_file(tmp_path / "fsdp" / "rank0" / "adapter" / "adapter_model.safetensors")
    trained = [t.shape for k, t in saved.items() if "offset_unit" not in k]  # LoFiT also saves its offsets' units
    assert sorted(trained) == sorted(t.shape for t in alone.values())
