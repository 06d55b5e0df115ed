"""Trace models the project did not write: transformers families, built from small random configs.

Each model goes through the whole path a user takes: trace, JSON round trip (with the trust the
graph needs), codegen, strict state_dict load into the generated module, and outputs equal to
the original within 1e-4, in eval mode and, where listed, in train mode with a fixed seed.
Prints the pass rate per family and every failure with its reason. Nothing is downloaded.

    python benchmarks/model_zoo.py            # all families
    python benchmarks/model_zoo.py bert vit   # some of them
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.utils._pytree as pytree

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from retiarii_ir import codegen  # noqa: E402
import retiarii_ir as ir  # noqa: E402

TOLERANCE = 1e-4
VOCAB = 99


@dataclass(frozen=True)
class ZooModel:
    """One model of a family: how to build it (random weights) and its example inputs."""

    family: str
    name: str
    build: Callable[[], torch.nn.Module]
    inputs: Callable[[], tuple]
    train_mode: bool = True  # also compared in train mode with a fixed seed


def _tokens(*shape: int) -> Callable[[], tuple]:
    return lambda: tuple(torch.randint(3, VOCAB, s) for s in shape)


def _image(size: int = 32) -> Callable[[], tuple]:
    return lambda: (torch.randn(2, 3, size, size),)


def _text_config(tf: Any, cls: str, **kwargs: Any) -> Any:
    ids = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    return getattr(tf, cls)(vocab_size=VOCAB, **ids, **kwargs)


def models() -> list[ZooModel]:
    """The models tested, per family; empty when transformers is not installed."""
    try:
        import transformers as tf
    except ImportError:
        return []
    tf.logging.set_verbosity_error()
    bert = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                max_position_embeddings=64)
    gpt2 = dict(n_embd=32, n_layer=2, n_head=2, n_positions=64, use_cache=False)
    llama = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=64, use_cache=False)
    t5 = dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, use_cache=False, decoder_start_token_id=0)
    bart = dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
                encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=64, use_cache=False)
    vit = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=37)
    resnet = dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])
    convnext = dict(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)
    return [
        ZooModel("BERT", "BertModel", lambda: tf.BertModel(_text_config(tf, "BertConfig", **bert)), _tokens((2, 7))),
        ZooModel("BERT", "BertForSequenceClassification",
                 lambda: tf.BertForSequenceClassification(_text_config(tf, "BertConfig", num_labels=3, **bert)),
                 _tokens((2, 7))),
        ZooModel("GPT-2", "GPT2LMHeadModel", lambda: tf.GPT2LMHeadModel(_text_config(tf, "GPT2Config", **gpt2)),
                 _tokens((2, 7))),
        ZooModel("Llama", "LlamaForCausalLM", lambda: tf.LlamaForCausalLM(_text_config(tf, "LlamaConfig", **llama)),
                 _tokens((2, 7))),
        ZooModel("T5", "T5Model", lambda: tf.T5Model(_text_config(tf, "T5Config", **t5)),
                 lambda: (torch.randint(3, VOCAB, (2, 7)), None, torch.randint(3, VOCAB, (2, 5)))),
        ZooModel("BART", "BartModel", lambda: tf.BartModel(_text_config(tf, "BartConfig", **bart)), _tokens((2, 7))),
        ZooModel("ViT", "ViTModel", lambda: tf.ViTModel(tf.ViTConfig(**vit)), _image()),
        ZooModel("ViT", "ViTForImageClassification",
                 lambda: tf.ViTForImageClassification(tf.ViTConfig(num_labels=5, **vit)), _image()),
        ZooModel("ResNet", "ResNetModel (basic)", lambda: tf.ResNetModel(tf.ResNetConfig(layer_type="basic", **resnet)),
                 _image()),
        ZooModel("ResNet", "ResNetForImageClassification (bottleneck)",
                 lambda: tf.ResNetForImageClassification(tf.ResNetConfig(num_labels=5, **resnet)), _image()),
        ZooModel("ConvNeXt", "ConvNextModel", lambda: tf.ConvNextModel(tf.ConvNextConfig(**convnext)), _image()),
    ]


def tensors(output: Any) -> list[torch.Tensor]:
    """The tensors of a model's output in order (transformers' ModelOutput or plain containers)."""
    if hasattr(output, "to_tuple"):
        output = output.to_tuple()
    return [t for t in pytree.tree_leaves(output) if isinstance(t, torch.Tensor)]


def _compare(expected: Any, got: Any, mode: str) -> None:
    want, have = tensors(expected), tensors(got)
    if len(want) != len(have):
        raise AssertionError(f"{mode}: {len(have)} output tensors, expected {len(want)}")
    for index, (w, h) in enumerate(zip(want, have)):
        if w.shape != h.shape or not torch.allclose(w, h, rtol=TOLERANCE, atol=TOLERANCE):
            diff = (w - h).abs().max().item() if w.shape == h.shape else f"shape {tuple(h.shape)} vs {tuple(w.shape)}"
            raise AssertionError(f"{mode}: output {index} differs (max abs diff {diff})")


def check(entry: ZooModel, train: bool = False, seed: int = 0) -> ir.Graph:
    """Trace ``entry``, round-trip it through JSON and codegen, and compare outputs; raises on
    the first difference. ``train`` compares in train mode with the same seed for both."""
    torch.manual_seed(seed)
    model = entry.build().eval()
    inputs = entry.inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the torch.export fallback announces itself
        graph = ir.trace(model, inputs)
    loaded = ir.Graph.from_json(graph.to_json(), trust=graph.trust)
    generated = codegen.load(loaded)()
    generated.load_state_dict(model.state_dict(), strict=True)
    for module in (model, generated):
        module.train(train)
    with torch.no_grad():
        torch.manual_seed(seed + 1)
        expected = model(*inputs)
        torch.manual_seed(seed + 1)
        got = generated(*inputs)
    _compare(expected, got, "train mode" if train else "eval mode")
    return graph


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:160]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("families", nargs="*", help="families to run (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    options = parser.parse_args(argv)
    torch.set_num_threads(options.threads)
    zoo = [m for m in models() if not options.families or m.family.lower() in {f.lower() for f in options.families}]
    if not zoo:
        print("transformers is not installed (pip install transformers), or no family matched")
        return 1
    rows: dict[str, list[int]] = {}
    failures: list[str] = []
    for entry in zoo:
        for train in (False, True) if entry.train_mode else (False,):
            start = time.perf_counter()
            try:
                check(entry, train=train)
                ok = True
            except Exception as error:  # noqa: BLE001 - every failure is reported, none stops the run
                ok = False
                failures.append(f"{entry.family} / {entry.name} ({'train' if train else 'eval'}): {_reason(error)}")
            row = rows.setdefault(f"{entry.family}|{'train' if train else 'eval'}", [0, 0, 0])
            row[0] += ok
            row[1] += 1
            row[2] += int((time.perf_counter() - start) * 1000)
    print(f"transformers {__import__('transformers').__version__}, torch {torch.__version__}\n")
    print("| family | mode | passed | seconds |")
    print("|---|---|---|---|")
    for key, (passed, total, ms) in rows.items():
        family, mode = key.split("|")
        print(f"| {family} | {mode} | {passed}/{total} | {ms / 1000:.1f} |")
    passed = sum(r[0] for r in rows.values())
    total = sum(r[1] for r in rows.values())
    print(f"\n{passed}/{total} checks passed")
    for failure in failures:
        print(f"- {failure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
