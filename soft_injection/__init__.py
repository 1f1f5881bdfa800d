"""Soft injection of task embeddings into attention heads (Park & Rhee, 2025)."""

from headwise.registry import register_method

from .adapter import SoftInjectionLayer, SoftInjectionModel
from .config import SoftInjectionConfig
from .embedding import extract_task_embedding, extraction_prompts
from .train import FitHistory, alpha_matrix, answer_loss, first_token_loss, fit, inject, set_task_embedding

register_method("SOFT_INJECTION", SoftInjectionConfig, SoftInjectionModel)

__all__ = [
    "FitHistory", "SoftInjectionConfig", "SoftInjectionLayer", "SoftInjectionModel", "alpha_matrix", "answer_loss",
    "extract_task_embedding", "extraction_prompts", "first_token_loss", "fit", "inject", "set_task_embedding",
]
