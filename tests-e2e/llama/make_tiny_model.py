#!/usr/bin/env python3
"""Write a tiny random-weight Llama chat model as GGUF, deterministically from a seed.

Nothing is downloaded from a model hub: the tokenizer is a real GPT-2 style byte-level
BPE trained here on a synthetic corpus, and the weights are numpy random numbers. The
answers are word salad, but they come from real inference in llama-server: real
tokenization, a ChatML chat template, sampling, KV cache, stop on ``<|im_end|>``,
``finish_reason`` "stop"/"length" and usage counts.

Two deliberate tweaks of the random init, made through a constant "bias" channel
(residual dimension 0 is 1.0 for every token and no layer writes to it, so column 0 of
the output matrix acts as a per-token logit bias):

* tokens that are not complete, printable UTF-8 get -30, so streamed text is always
  valid UTF-8 (multi-byte characters such as "é", "你好", "🚀" still appear, as whole tokens);
* ``<|im_end|>`` gets ``--eos-bias``, so answers end by themselves after a few dozen tokens.

The file is cached in ``$REMOTELLM_LLAMA_CACHE`` (default ``~/.cache/remotellm/llama``)
under a name derived from every input, so a second run is a file-exists check. The
path is the only thing printed on stdout; progress goes to stderr.

Needs numpy, gguf and tokenizers at the versions in ``PINS``. When the running Python
lacks them (at exactly those versions, which keeps the output byte-identical), they are
installed into a private venv in the cache and this script re-runs itself there.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import importlib.metadata
import json
import os
import random
import subprocess
import sys
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PINS = {"numpy": "2.4.6", "gguf": "0.19.0", "tokenizers": "0.23.3"}
GENERATOR_VERSION = 1  # bump whenever the bytes written for the same spec change
IN_VENV_ENV = "_REMOTELLM_TINY_MODEL_IN_VENV"  # guards against re-exec loops

BOS, EOS = "<|endoftext|>", "<|im_end|>"
SPECIAL_TOKENS = [BOS, "<|im_start|>", EOS]
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# The training corpus: frequent English words plus a few words of our own domain.
_CORPUS_WORDS = """
the of and to a in is it you that he was for on are with as his they be at one have this
from or had by word but what some we can out other were all there when up use your how
said an each she which do their time if will way about many then them write would like so
these her long make thing see him two has look more day could go come did number sound no
most people my over know water than call first who may down side been now find any new
work part take get place made live where after back little only round man year came show
every good me give our under name very through just form sentence great think say help low
line turn cause much mean before move right boy old too same tell does set three want air
well also play small end put home read hand port large spell add even land here must big
high such follow act why ask men change went light kind off need house picture try us
again animal point mother world near build self earth father head stand own page should
country found answer school grow study still learn plant cover food sun four between state
keep eye never last let thought city tree cross farm hard start might story saw far sea
draw left late run while press close night real life few north open seem together next
white children relay stream token model server request broker connector socket frame
credit window
"""
WORDS = _CORPUS_WORDS.split()
UNICODE_WORDS = ["é", "ü", "ñ", "—", "“", "”", "你好", "世界", "🙂", "🚀"]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything that determines the bytes of the model file."""

    seed: int = 0
    n_embd: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 768
    n_ctx_train: int = 16384  # generous, so any test context size is within "training" range
    vocab_target: int = 4096  # an upper bound: BPE runs out of merges on this small corpus
    logit_std: float = 3.0  # spread of the random logits: higher = less uniform word choice
    eos_bias: float = 4.0  # higher = shorter answers; 0 = they (almost) never stop

    def cache_key(self) -> str:
        fields = {**dataclasses.asdict(self), "generator": GENERATOR_VERSION, "pins": PINS}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


def log(msg: str) -> None:
    print(f"[make-tiny-model {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    root = os.environ.get("REMOTELLM_LLAMA_CACHE") or "~/.cache/remotellm/llama"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """Serialise concurrent callers (parallel pytest workers) so the work happens once."""
    with open(cache_dir() / f".{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ---- dependencies: use this interpreter if it has the exact pins, else a private venv ----


def have_pinned_deps() -> bool:
    try:
        return all(importlib.metadata.version(name) == ver for name, ver in PINS.items())
    except importlib.metadata.PackageNotFoundError:
        return False


def quiet_run(cmd: list[str]) -> None:
    """Run a setup command; show its output only when it fails (pip is chatty)."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise SystemExit(f"{' '.join(cmd[:4])} ... exited {proc.returncode}:\n{tail}")


def private_venv_python() -> Path:
    """Create (once) a venv holding exactly PINS and return its python."""
    pins = [f"{name}=={ver}" for name, ver in sorted(PINS.items())]
    venv = cache_dir() / f"model-venv-{hashlib.sha256(' '.join(pins).encode()).hexdigest()[:8]}"
    python = venv / "bin" / "python"
    with locked(venv.name):
        if not (venv / ".complete").exists():
            log(f"installing {' '.join(pins)} into {venv}")
            quiet_run([sys.executable, "-m", "venv", "--clear", str(venv)])
            quiet_run([str(python), "-m", "pip", "install", "--disable-pip-version-check", *pins])
            (venv / ".complete").touch()
    return python


# ---- tokenizer ----------------------------------------------------------------------------


def synthetic_corpus(rng: random.Random, n_lines: int = 20000) -> list[str]:
    """Zipf-distributed word salad, with punctuation, capitals and some multi-byte words."""
    weights = [1 / (i + 1) ** 0.8 for i in range(len(WORDS))]

    def sentence() -> str:
        words = rng.choices(WORDS, weights, k=rng.randint(3, 14))
        if rng.random() < 0.2:
            words.insert(rng.randrange(len(words)), rng.choice(UNICODE_WORDS))
        text = " ".join(words)
        return text[0].upper() + text[1:] + rng.choice(".,.?!")

    return [
        " ".join(sentence() for _ in range(rng.randint(1, 5))) + rng.choice(["\n", "\n\n", " "])
        for _ in range(n_lines)
    ]


def train_tokenizer(spec: ModelSpec) -> tuple[list[str], list[tuple[str, str]]]:
    """Train a GPT-2 style byte-level BPE; return (tokens in id order, merges)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    # use_regex=True is GPT-2's pre-split regex, which GGUF's tokenizer.ggml.pre "gpt-2" names
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_target,
        show_progress=False,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte stays encodable
    )
    tok.train_from_iterator(synthetic_corpus(random.Random(spec.seed)), trainer)
    by_id: dict[int, str] = {i: t for t, i in tok.get_vocab(with_added_tokens=True).items()}
    tokens = [by_id[i] for i in range(len(by_id))]
    raw_merges: list[str | list[str]] = json.loads(tok.to_str())["model"]["merges"]
    # the JSON form changed across versions: "a b" strings or ["a", "b"] pairs
    pairs = [m.split(" ", 1) if isinstance(m, str) else m for m in raw_merges]
    return tokens, [(a, b) for a, b in pairs]


def gpt2_unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's byte -> printable character mapping used in byte-level vocabularies."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            mapping[chr(256 + extra)] = b
            extra += 1
    return mapping


def is_printable_utf8(token: str, u2b: dict[str, int]) -> bool:
    """Whole UTF-8 characters only, and no control characters other than newline and tab."""
    try:
        text = bytes(u2b[c] for c in token).decode("utf-8")
    except (UnicodeDecodeError, KeyError):
        return False
    return all(ch in "\n\t" or unicodedata.category(ch) != "Cc" for ch in text)


# ---- weights ------------------------------------------------------------------------------


def make_weights(spec: ModelSpec, tokens: list[str]) -> dict[str, Any]:
    """Random Llama weights in GGUF tensor names (Q/K already in GGUF's rotary layout)."""
    import numpy as np

    rng = np.random.default_rng(spec.seed)
    n_vocab, E = len(tokens), spec.n_embd
    head_dim = E // spec.n_head

    def rnd(rows: int, cols: int, std: float | None = None) -> Any:
        # 0.32/sqrt(fan_in) (0.02 at width 256) keeps residual statistics, hence the
        # EOS rate, similar if someone changes the width
        scale = 0.32 / np.sqrt(cols) if std is None else std
        return rng.standard_normal((rows, cols), dtype=np.float32) * scale

    # Random Q/K need no rotary permutation: any permutation of random numbers is random.
    weights: dict[str, Any] = {}
    embd = rnd(n_vocab, E, std=1.0)
    embd[:, 0] = 1.0  # the constant bias channel
    weights["token_embd.weight"] = embd
    for i in range(spec.n_layer):
        blk = f"blk.{i}."
        weights[blk + "attn_norm.weight"] = np.ones(E, np.float32)
        weights[blk + "attn_q.weight"] = rnd(spec.n_head * head_dim, E)
        weights[blk + "attn_k.weight"] = rnd(spec.n_head_kv * head_dim, E)
        weights[blk + "attn_v.weight"] = rnd(spec.n_head_kv * head_dim, E)
        weights[blk + "attn_output.weight"] = rnd(E, spec.n_head * head_dim)
        weights[blk + "ffn_norm.weight"] = np.ones(E, np.float32)
        weights[blk + "ffn_gate.weight"] = rnd(spec.n_ff, E)
        weights[blk + "ffn_up.weight"] = rnd(spec.n_ff, E)
        weights[blk + "ffn_down.weight"] = rnd(E, spec.n_ff)
        # no layer may write into the bias channel
        weights[blk + "attn_output.weight"][0, :] = 0.0
        weights[blk + "ffn_down.weight"][0, :] = 0.0
    weights["output_norm.weight"] = np.ones(E, np.float32)
    out = rnd(n_vocab, E, std=spec.logit_std / np.sqrt(E))
    u2b = gpt2_unicode_to_byte()
    out[:, 0] = [0.0 if t in SPECIAL_TOKENS or is_printable_utf8(t, u2b) else -30.0 for t in tokens]
    out[tokens.index(EOS), 0] = spec.eos_bias
    weights["output.weight"] = out
    return weights


# ---- GGUF ---------------------------------------------------------------------------------


def write_gguf(
    spec: ModelSpec,
    path: Path,
    tokens: list[str],
    merges: list[tuple[str, str]],
    weights: dict[str, Any],
) -> None:
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("remotellm-tiny-random-llama")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_vocab_size(len(tokens))
    w.add_context_length(spec.n_ctx_train)
    w.add_embedding_length(spec.n_embd)
    w.add_block_count(spec.n_layer)
    w.add_feed_forward_length(spec.n_ff)
    w.add_head_count(spec.n_head)
    w.add_head_count_kv(spec.n_head_kv)
    w.add_rope_dimension_count(spec.n_embd // spec.n_head)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types(
        [gguf.TokenType.CONTROL if t in SPECIAL_TOKENS else gguf.TokenType.NORMAL for t in tokens]
    )
    w.add_token_merges([f"{a} {b}" for a, b in merges])
    w.add_bos_token_id(tokens.index(BOS))
    w.add_eos_token_id(tokens.index(EOS))
    w.add_eot_token_id(tokens.index(EOS))
    w.add_pad_token_id(tokens.index(BOS))
    w.add_add_bos_token(False)  # ChatML models do not prepend BOS
    w.add_chat_template(CHATML_TEMPLATE)
    for name, tensor in weights.items():
        # norms stay f32 (llama.cpp expects that); matrices are f16 to halve the file
        w.add_tensor(name, tensor if tensor.ndim == 1 else tensor.astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def generate(spec: ModelSpec, path: Path) -> None:
    """Write the model to a temporary name, then rename: readers never see half a file."""
    started = time.monotonic()
    tokens, merges = train_tokenizer(spec)
    weights = make_weights(spec, tokens)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    write_gguf(spec, tmp, tokens, merges, weights)
    os.replace(tmp, path)
    n_params = sum(t.size for t in weights.values())
    log(
        f"wrote {path.name}: vocab={len(tokens)} params={n_params / 1e6:.2f}M "
        f"size={path.stat().st_size / 1e6:.1f} MB in {time.monotonic() - started:.1f} s"
    )


def model_path(spec: ModelSpec) -> Path:
    return cache_dir() / f"tiny-llama-{spec.cache_key()}.gguf"


def parse_args(argv: list[str]) -> tuple[ModelSpec, bool]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    defaults = ModelSpec()
    ap.add_argument("--seed", type=int, default=defaults.seed)
    ap.add_argument(
        "--eos-bias",
        type=float,
        default=defaults.eos_bias,
        help="logit bonus of <|im_end|>: higher = shorter answers (default %(default)s)",
    )
    ap.add_argument("--force", action="store_true", help="regenerate even if cached")
    a = ap.parse_args(argv)
    return ModelSpec(seed=a.seed, eos_bias=a.eos_bias), a.force


def main(argv: list[str]) -> int:
    spec, force = parse_args(argv)
    path = model_path(spec)
    if path.exists() and not force:
        print(path)
        return 0
    if not have_pinned_deps():
        if os.environ.get(IN_VENV_ENV):
            log(f"the private venv does not hold {PINS}")
            return 1
        python = private_venv_python()
        env = {**os.environ, IN_VENV_ENV: "1"}
        return subprocess.run([str(python), __file__, *argv], env=env, check=False).returncode
    with locked(path.name):
        if force or not path.exists():
            generate(spec, path)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
