"""Head interventions, the analysis papers' tools: head gates (an adapter), patching, attention override
and key blocking (context managers), position selectors, and attribution (activation cache, direct
logit attribution, logit lens, a layers x heads plot).

The gate adapter registers through ``headwise.register_method`` exactly as a third-party method would.
"""

from headwise.registry import register_method

from .attention import block_keys, override_attention, uniform_pattern
from .attribution import direct_logit_attribution, head_writes, logit_lens, plot_attribution
from .cache import HeadActivations, cache_heads
from .config import HeadGateConfig
from .gates import HeadGateLayer, HeadGateModel, gate_scales, set_baseline
from .patching import mean_heads, patch
from .positions import all_tokens, last_token, span_positions, token_index, token_occurrences

register_method("HEAD_GATE", HeadGateConfig, HeadGateModel)

__all__ = [
    "HeadActivations", "HeadGateConfig", "HeadGateLayer", "HeadGateModel", "all_tokens", "block_keys", "cache_heads",
    "direct_logit_attribution", "gate_scales", "head_writes", "last_token", "logit_lens", "mean_heads", "override_attention",
    "patch", "plot_attribution", "set_baseline", "span_positions", "token_index", "token_occurrences", "uniform_pattern",
]
