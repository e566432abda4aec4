"""A tiny random Qwen2.5-VL model and a real, offline Qwen2.5-VL processor.

For tests and `make train` on the tiny config only: nothing here downloads anything. Real
checkpoints are loaded by path elsewhere (`from_pretrained(<path>)`).

The tokenizer is a byte-level BPE with the 256 byte tokens and no merges (every byte is a token),
plus Qwen's special tokens with their usual spellings; the model config's token ids are taken from
that tokenizer, so `processor(...)` output feeds `model(...)` / `model.generate(...)` directly.

Example:
    >>> model, processor = tiny_model_and_processor(seed=0)
    >>> frames = np.zeros((4, 56, 56, 3), dtype=np.uint8)          # uint8 [K, H, W, 3]
    >>> msgs = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Q?"}]}]
    >>> text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    >>> batch = processor(text=[text], videos=[frames], return_tensors="pt")
    >>> out = model.generate(**batch, max_new_tokens=8)
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
)

# Qwen2/2.5-VL special tokens, in the order Qwen's tokenizer lists them.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Placeholders a completion must never contain (`suppress_tokens` of the tiny model's generation).
VISION_TOKENS: tuple[str, ...] = (
    "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"
)

_IMAGE = "content['type'] == 'image' or 'image' in content or 'image_url' in content"
_VIDEO = "content['type'] == 'video' or 'video' in content"
_VISION_ITEMS = (
    f"{{% if {_IMAGE} %}}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    f"{{% elif {_VIDEO} %}}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
)


def chat_template(text_around: bool = False) -> str:
    """Qwen2-VL's chat template (as shipped with Qwen2.5-VL-*-Instruct), minus tool calling.

    Args:
        text_around: render a message that has images or videos as its text, then its images
            and videos, then its text again (False: the items in the message's order, as Qwen's
            template does). The world VLM can be trained on this layout
            (`VlmTrainConfig.text_around`): the vision tokens can attend to the question, and
            the answer still reads it after them.
    """
    texts = (f"{{% for content in message['content'] %}}{{% if not ({_IMAGE}) and not "
             f"({_VIDEO}) and 'text' in content %}}{{{{ content['text'] }}}}{{% endif %}}"
             "{% endfor %}")
    if text_around:
        items = ("{% set vision = namespace(count=0) %}"
                 f"{{% for content in message['content'] %}}{{% if ({_IMAGE}) or ({_VIDEO}) %}}"
                 "{% set vision.count = vision.count + 1 %}{% endif %}{% endfor %}"
                 f"{texts}{{% if vision.count > 0 %}}"
                 f"{{% for content in message['content'] %}}{_VISION_ITEMS}{{% endif %}}"
                 f"{{% endfor %}}{texts}{{% endif %}}")
    else:
        items = ("{% for content in message['content'] %}"
                 f"{_VISION_ITEMS}{{% elif 'text' in content %}}{{{{ content['text'] }}}}"
                 "{% endif %}{% endfor %}")
    return (
        "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
        "{% for message in messages %}"
        "{% if loop.first and message['role'] != 'system' %}"
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
        "<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
        f"{{% else %}}{items}<|im_end|>\n{{% endif %}}{{% endfor %}}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


CHAT_TEMPLATE = chat_template()

# Pixel budget per frame: 28*28 .. 28*28*6, i.e. 1..6 merged tokens per temporal group.
TINY_MIN_PIXELS = 28 * 28
TINY_MAX_PIXELS = 28 * 28 * 6


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer with Qwen's special tokens, built in memory.

    Returns:
        PreTrainedTokenizerFast: ids 0..255 are the byte tokens, then `SPECIAL_TOKENS` in order.
        Padding is on the left (generation), pad = eos = `<|endoftext|>` as in Qwen.
    """
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    alphabet.sort()  # stable ids across runs (alphabet() returns an unordered list)
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    bpe.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS),
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    unknown = (None, tok.unk_token_id)
    missing = [t for t in SPECIAL_TOKENS if tok.convert_tokens_to_ids(t) in unknown]
    assert not missing, f"special tokens not registered: {missing}"
    return tok


def tiny_processor() -> Qwen2_5_VLProcessor:
    """A real `Qwen2_5_VLProcessor` built offline (tiny tokenizer, small pixel budgets).

    Returns:
        Qwen2_5_VLProcessor: patch 14, temporal patch 2, merge 2; each frame is resized to between
        `TINY_MIN_PIXELS` and `TINY_MAX_PIXELS` pixels, so a temporal group of a video has 1..6
        visual tokens. Videos are passed as uint8 [K, H, W, 3] arrays with K even.
    """
    size = {"shortest_edge": TINY_MIN_PIXELS, "longest_edge": TINY_MAX_PIXELS}
    common = dict(patch_size=14, temporal_patch_size=2, merge_size=2, size=size)
    image_processor = Qwen2VLImageProcessor(**common)
    video_processor = Qwen2VLVideoProcessor(**common, cap_pixels_per_frame=True)
    return Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tiny_tokenizer(),
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


# Random-weight shapes: "tiny" (0.19M parameters) for tests on CPU; "2b" for speed checks on a
# GPU: Qwen2-VL-2B's language model and Qwen2.5-VL's 32-layer vision tower, 1.98B parameters
# with the byte tokenizer's vocabulary (a real 151k vocabulary would add 0.47B of embeddings).
SHAPES: dict[str, dict[str, dict]] = {
    "tiny": {
        "text": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, mrope_section=[2, 3, 3]),
        "vision": dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, window_size=56,
                       fullatt_block_indexes=[1]),
    },
    # the world's video QA model (train.world_vlm): wide enough to tell shapes apart
    "world": {
        "text": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=3,
                     num_attention_heads=4, num_key_value_heads=2, mrope_section=[4, 6, 6]),
        "vision": dict(depth=3, hidden_size=96, intermediate_size=192, num_heads=4,
                       window_size=112, fullatt_block_indexes=[2]),
    },
    # "vision": Qwen2.5-VL's real 32-layer vision tower (670M parameters) with a 2-layer LLM
    # of hidden 256: a shape where the vision tower is most of a forward, for CPU speed checks
    # of running it once per prompt (benchmarks/bench_train_step.py --size vision).
    "vision": {
        "text": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, mrope_section=[8, 12, 12]),
        "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                       window_size=112, fullatt_block_indexes=[7, 15, 23, 31]),
    },
    "2b": {
        "text": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                     num_attention_heads=12, num_key_value_heads=2, mrope_section=[16, 24, 24]),
        "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                       window_size=112, fullatt_block_indexes=[7, 15, 23, 31]),
    },
}


def tiny_config(tokenizer: PreTrainedTokenizerFast | None = None,
                shape: str = "tiny") -> Qwen2_5_VLConfig:
    """A random Qwen2.5-VL config; "tiny": text hidden 64 (2 layers, 4 heads), vision hidden 32
    (2 layers); "2b": see SHAPES.

    Args:
        tokenizer: token ids are read from it (default: `tiny_tokenizer()`).
        shape: a key of SHAPES.

    Returns:
        Qwen2_5_VLConfig whose special token ids match the tokenizer.
    """
    if shape not in SHAPES:
        raise ValueError(f"tiny model shape {shape!r} unknown; use one of {sorted(SHAPES)}")
    tok = tokenizer if tokenizer is not None else tiny_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    vocab_size = ((len(tok) + 7) // 8) * 8
    text = dict(SHAPES[shape]["text"])
    mrope = text.pop("mrope_section")
    text_config = dict(
        vocab_size=vocab_size,
        **text,
        max_position_embeddings=32768,
        # mrope splits head_dim/2 rotary frequencies into (temporal, height, width).
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": mrope},
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    vision_config = dict(
        **SHAPES[shape]["vision"],
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        out_hidden_size=text["hidden_size"],
        tokens_per_second=2,
    )
    return Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def tiny_qwen2_5_vl(seed: int = 0, tokenizer: PreTrainedTokenizerFast | None = None,
                    shape: str = "tiny"):
    """A random `Qwen2_5_VLForConditionalGeneration` (float32, eval mode; "tiny": ~0.2M params).

    Args:
        seed: torch seed for the random init (same seed, same weights).
        tokenizer: token ids are read from it (default: `tiny_tokenizer()`).
        shape: a key of SHAPES.

    Returns:
        Qwen2_5_VLForConditionalGeneration on CPU with `generation_config` eos/pad set and the
        vision placeholder tokens suppressed in generation.
    """
    config = tiny_config(tokenizer, shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.generation_config.bos_token_id = config.text_config.bos_token_id
    # A random model samples any id; a vision placeholder in a completion would break the next
    # forward (placeholder count != video features), so never generate the vision tokens.
    tok = tokenizer if tokenizer is not None else tiny_tokenizer()
    model.generation_config.suppress_tokens = [
        tok.convert_tokens_to_ids(t) for t in VISION_TOKENS
    ]
    return model.eval()


def tiny_model_and_processor(seed: int = 0, shape: str = "tiny"):
    """The tiny model and its matching processor (shared tokenizer ids).

    Args:
        seed: torch seed for the model's random init.
        shape: a key of SHAPES.

    Returns:
        (Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor)
    """
    processor = tiny_processor()
    return tiny_qwen2_5_vl(seed, processor.tokenizer, shape), processor
