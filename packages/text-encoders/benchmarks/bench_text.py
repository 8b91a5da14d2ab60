"""Prompts per second: clapkit's GPT2-EOT text path vs msclap's, on the CPU, same run.

Run from the repository root (msclap installed, e.g. in the environment of ``nox -s bench``):

    HF_HUB_OFFLINE=1 python packages/text-encoders/benchmarks/bench_text.py [--json out.json]

Both sides use the same GPT2-base-sized model (124 M parameters, random weights) and the real
GPT-2 tokenizer, and embed the same 64 zero-shot prompts as one batch; the two paths take
turns, and the best and the median of ``--repeats`` turns are reported. msclap's path is its own
``CLAPWrapper.get_text_embeddings`` (each prompt tokenised alone and padded to 77 tokens);
clapkit tokenises the batch at once and pads to the longest prompt. Projections are left out
of both (msclap's is replaced by an identity), so the pooled vectors are compared as well. Without
msclap installed, a restatement of its text path (same tokenisation, padding and pooling rule)
is the baseline; the output says which one ran, and ``--json`` then reports no reference figure.
``--quick`` embeds 16 prompts once per path.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn
from transformers import GPT2Config, GPT2Model, GPT2TokenizerFast

from clapkit.text import gpt2_eot

ESC50_CLASSES = (
    "dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow",
    "rain", "sea waves", "crackling fire", "crickets", "chirping birds", "water drops", "wind",
    "pouring water", "toilet flush", "thunderstorm", "crying baby", "sneezing", "clapping",
    "breathing", "coughing", "footsteps", "laughing", "brushing teeth", "snoring",
    "drinking sipping", "door wood knock", "mouse click", "keyboard typing",
    "door wood creaks", "can opening", "washing machine", "vacuum cleaner", "clock alarm",
    "clock tick", "glass breaking", "helicopter", "chainsaw", "siren", "car horn", "engine",
    "train", "church bells", "airplane", "fireworks", "hand saw",
)  # fmt: skip
URBANSOUND_CLASSES = (
    "air conditioner", "children playing", "drilling", "engine idling", "gun shot",
    "jackhammer", "street music", "dog bark", "a person speaking", "music playing",
    "a crowd cheering", "an explosion", "a bell ringing", "a baby laughing",
)  # fmt: skip


# GPT-2's real vocabulary, shipped in the repository (data/reference/README.md).
GPT2_FOLDER = Path(__file__).resolve().parents[3] / "data" / "reference" / "tokenizers" / "gpt2"
MSCLAP_NAME = "msclap 1.3.4 CLAPWrapper.get_text_embeddings"


def _msclap_path(
    model: GPT2Model, tokenizer: GPT2TokenizerFast
) -> tuple[str, Callable[[list[str]], torch.Tensor]]:
    """msclap's own text path if installed, else a restatement of it."""
    msclap_tokenizer = copy.deepcopy(tokenizer)
    msclap_tokenizer.add_special_tokens({"pad_token": "!"})  # as msclap's load_clap
    try:
        from msclap.CLAPWrapper import CLAPWrapper
        from msclap.models import clap as msclap_clap
    except ImportError:
        pass
    else:
        original = msclap_clap.AutoModel.from_pretrained
        msclap_clap.AutoModel.from_pretrained = lambda *args, **kwargs: model
        try:
            tower = msclap_clap.TextEncoder(
                d_out=1024, text_model="gpt2", transformer_embed_dim=768
            )
        finally:
            msclap_clap.AutoModel.from_pretrained = original
        tower.projection = nn.Identity()
        if not hasattr(msclap_tokenizer, "encode_plus"):  # removed in transformers 5
            msclap_tokenizer.encode_plus = msclap_tokenizer.__call__
        wrapper = object.__new__(CLAPWrapper)
        wrapper.args = argparse.Namespace(text_model="gpt2", text_len=77)
        wrapper.tokenizer = msclap_tokenizer
        wrapper.token_keys = ["input_ids", "attention_mask"]
        wrapper.use_cuda = False
        wrapper.clap = SimpleNamespace(caption_encoder=tower.eval())
        return MSCLAP_NAME, wrapper.get_text_embeddings

    def restated(prompts: list[str]) -> torch.Tensor:
        rows = [
            msclap_tokenizer(p + " <|endoftext|>", max_length=77, padding="max_length")
            for p in prompts
        ]
        ids = torch.tensor([r["input_ids"] for r in rows])
        mask = torch.tensor([r["attention_mask"] for r in rows])
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
        return hidden[torch.arange(len(prompts)), ids.ne(0).sum(-1) - 1]

    return "msclap text path restated (msclap not installed)", restated


def _timings(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    """(best, median) seconds per run; the runs are interleaved so load hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: (min(t), statistics.median(t)) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=Path, default=GPT2_FOLDER)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--quick", action="store_true", help="16 prompts, one turn per path")
    parser.add_argument("--json", type=Path, help="also write the figures here (bench rows)")
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.repeats = 16, 1
    if args.threads:
        torch.set_num_threads(args.threads)

    labels = [*ESC50_CLASSES, *URBANSOUND_CLASSES]
    prompts = [f"this is a sound of {labels[i % len(labels)]}" for i in range(args.prompts)]
    tokenizer = GPT2TokenizerFast.from_pretrained(str(args.vocab))
    torch.manual_seed(0)
    config = GPT2Config()  # GPT2-base: 12 layers, 768 wide, 124 M parameters
    reference_model = GPT2Model(config).eval()
    baseline_name, baseline = _msclap_path(reference_model, tokenizer)
    encoder = gpt2_eot(config=config, tokenizer=tokenizer).eval()
    encoder.model.load_state_dict(reference_model.state_dict())

    with torch.inference_mode():
        ours, theirs = encoder(prompts).embedding, baseline(prompts)  # also warms up
        width = encoder.tokenize(prompts)["input_ids"].shape[1]
        timings = _timings(
            {"baseline": lambda: baseline(prompts), "clapkit": lambda: encoder(prompts)},
            args.repeats,
        )

    print(f"device: CPU, {torch.get_num_threads()} threads; torch {torch.__version__}")
    print(f"{args.prompts} prompts, GPT2-base random weights, real GPT-2 tokenizer")
    print(f"baseline: {baseline_name}: padded to 77 tokens")
    print(f"clapkit : gpt2_eot, dynamic padding to {width} tokens")
    print(f"max |clapkit - baseline| over pooled vectors: {(ours - theirs).abs().max():.2e}")
    for name, (best, median) in timings.items():
        print(
            f"{name:8}: {args.prompts / best:8.1f} prompts/s best, "
            f"{args.prompts / median:8.1f} median ({best * 1e3:.0f} / {median * 1e3:.0f} ms)"
        )
    (base_best, base_median), (ours_best, ours_median) = timings["baseline"], timings["clapkit"]
    print(f"speed-up: {base_best / ours_best:.2f}x best, {base_median / ours_median:.2f}x median")
    if args.json is not None:
        real_reference = baseline_name == MSCLAP_NAME  # a restatement is no reference figure
        case = f"gpt2-eot, {args.prompts} prompts, GPT2-base, CPU {torch.get_num_threads()}t"
        rows = [
            {
                "benchmark": "text-encoders",
                "case": f"{case}, {label} of {args.repeats}",
                "unit": "prompts/s",
                "reference": args.prompts / base if real_reference else None,
                "clapkit": args.prompts / ours,
            }
            for label, base, ours in (
                ("best", base_best, ours_best),
                ("median", base_median, ours_median),
            )[: 1 if args.repeats == 1 else 2]  # one turn: best and median are the same figure
        ]
        args.json.write_text(json.dumps({"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
