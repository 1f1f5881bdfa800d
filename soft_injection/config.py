"""SoftInjectionConfig: per-head mixing of a task embedding at the last prompt token."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from headwise.config import AdapterConfig
from headwise.experiments.data import QA_TEMPLATE, check_template
from headwise.transaction import check_count

__all__ = ["SoftInjectionConfig"]


@dataclass
class SoftInjectionConfig(AdapterConfig):
    """Soft injection (Park & Rhee 2025): ``z <- (1 - a) z + a t`` at the last prompt token, prefill only,
    with ``a = sigmoid(theta)`` per head and ``t`` the task embedding (mean head outputs of few-shot prompts).

    ``template`` is the prompt format used to extract the embedding; inject with the same one.
    """

    template: str = field(default=QA_TEMPLATE, metadata={"help": "Prompt template with '{input}' (extraction and use)."})
    init_theta: float = field(default=0.0, metadata={"help": "Initial theta: 0 gives alpha = 0.5."})
    n_prompts: int = field(default=50, metadata={"help": "Few-shot prompts averaged into the task embedding."})
    n_shots: int = field(default=10, metadata={"help": "Demonstrations per extraction prompt."})

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.template, str) or "{input}" not in self.template:
            raise ValueError(f"template must contain '{{input}}', got {self.template!r}")
        check_template(self.template)
        if isinstance(self.init_theta, bool) or not isinstance(self.init_theta, (int, float)) or not math.isfinite(self.init_theta):
            raise ValueError(f"init_theta must be a finite number, got {self.init_theta!r}")
        check_count("n_prompts", self.n_prompts)
        check_count("n_shots", self.n_shots, minimum=0)
