"""Keeps credentials out of logged configs and checkpoints."""

import os
import re
from typing import Any

# Whole key parts: `hub_token`, `api_key`, `client_secret` match; `tokenizer`, `max_new_tokens` do not.
SECRET_KEY = re.compile(r"(^|_)(api_?key|token|secret|password|passwd|credentials?)$", re.IGNORECASE)
SECRET_ENV = ("WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "AWS_SECRET_ACCESS_KEY")
REDACTED = "***"


def redact(config: Any) -> Any:
    """A copy of a plain config with secret-looking keys, and values of known secret env vars, replaced."""
    secrets = {v for k in SECRET_ENV if len(v := os.environ.get(k, "")) >= 8}

    def walk(node: Any, key: str = "") -> Any:
        if isinstance(node, dict):
            return {k: walk(v, str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, key) for v in node]
        if isinstance(node, str) and (SECRET_KEY.search(key) or any(s in node for s in secrets)):
            return REDACTED
        return node

    return walk(config)
