"""A tiny random GLM-4 (transformers' native ``glm4`` architecture) with a GLM-4 style chat template.

GLM-4's own tokenizer is not on this machine (no model hub): the tiny model borrows SmolLM2's
BPE vocabulary and adds GLM-4's special tokens, and its template renders a conversation the way
GLM-4-9B-Chat's does: ``[gMASK]<sop>``, a role token per turn (``<|system|>``, ``<|user|>``,
``<|assistant|>``, ``<|observation|>`` for tool results), tools listed in a system block, a tool
call as ``<|assistant|>{name}`` then its JSON arguments, and nothing after an assistant turn: the
model stops by emitting the next role's token, which generation_config.json lists as eos.
"""

from __future__ import annotations

from pathlib import Path

GLM4_SPECIAL = ["[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"]

GLM4_TEMPLATE = (
    "[gMASK]<sop>"
    "{%- if tools %}<|system|>\n"
    "You are a helpful assistant that can call tools.\n\n# Available tools"
    "{%- for tool in tools %}{%- set function = tool.function if tool.function is defined else tool %}\n\n"
    "## {{ function.name }}\n\n{{ function | tojson(indent=4, ensure_ascii=False) }}\n"
    "Use JSON for the arguments when calling the function above."
    "{%- endfor %}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'system' %}<|system|>\n{{ message.content }}"
    "{%- elif message.role == 'user' %}<|user|>\n{{ message.content }}"
    "{%- elif message.role == 'assistant' and message.tool_calls %}"
    "{%- for call in message.tool_calls %}<|assistant|>{{ call.function.name }}\n"
    "{{ call.function.arguments | tojson(ensure_ascii=False) }}{%- endfor %}"
    "{%- elif message.role == 'assistant' %}<|assistant|>\n{{ message.content }}"
    "{%- elif message.role == 'tool' %}<|observation|>\n{{ message.content }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}<|assistant|>{%- endif %}"
)


def build_tiny_glm4(folder: Path | str, source_tokenizer_dir: Path | str) -> Path:
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Glm4Config, Glm4ForCausalLM

    folder = Path(folder)
    if (folder / "config.json").exists():
        return folder
    tokenizer = AutoTokenizer.from_pretrained(str(source_tokenizer_dir))
    tokenizer.add_special_tokens({"additional_special_tokens": GLM4_SPECIAL})
    tokenizer.eos_token = "<|endoftext|>"
    tokenizer.pad_token = "<|endoftext|>"
    tokenizer.chat_template = GLM4_TEMPLATE
    torch.manual_seed(0)
    config = Glm4Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = Glm4ForCausalLM(config)
    with torch.no_grad():  # larger embeddings: a 32-wide model's logits are otherwise nearly uniform
        model.get_input_embeddings().weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(0))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    stops = [tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|user|>", "<|observation|>")]
    GenerationConfig(eos_token_id=stops, pad_token_id=tokenizer.pad_token_id).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
