"""Pushing an adapter to the Hugging Face Hub with its headwise model card."""

from __future__ import annotations

import tempfile
from typing import Any

from huggingface_hub import HfApi

__all__ = ["push_to_hub"]


def push_to_hub(
    model, repo_id: str, *, private: bool | None = None, token: str | None = None,
    commit_message: str = "Upload headwise adapter", **save_kwargs: Any,
):
    """``save_pretrained`` into a temporary folder and upload it as it is (adapter_config.json,
    adapter_model.safetensors and the README that tells users to ``import headwise``).

    ``PeftModel.push_to_hub`` works too, but replaces the README with transformers' generic card.
    Load the result with ``headwise.from_pretrained(base, repo_id)``.
    """
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder, **save_kwargs)
        return api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message)
