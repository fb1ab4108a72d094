"""CLIP's byte-level BPE tokenizer (OpenAI's simple_tokenizer), reading assets/bpe_simple_vocab_16e6.txt.gz.

Token ids equal OpenAI CLIP's: <|startoftext|> = 49406, <|endoftext|> = 49407, context 77, zero padding.
OpenAI also runs ftfy's text fixer first; prompts here are plain ASCII, for which it is the identity.
"""
from __future__ import annotations

import functools
import gzip
import html
from pathlib import Path

import regex as re
import torch

VOCAB_NAME = "bpe_simple_vocab_16e6.txt.gz"


def _vocab_path() -> Path:
    """The checkout's assets/ file, else the copy an installed ``liveness-app`` carries in liveness_app/bundled
    (models/ and liveness_app/ are installed side by side; liveness_app is not imported for it)."""
    here = Path(__file__).resolve().parent.parent
    for folder in (here / "assets", here / "liveness_app" / "bundled"):
        if (folder / VOCAB_NAME).is_file():
            return folder / VOCAB_NAME
    return here / "assets" / VOCAB_NAME  # absent: the tokenizer's error names the expected place


VOCAB_PATH = _vocab_path()


@functools.lru_cache()
def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _get_pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    return set(zip(word[:-1], word[1:]))


def _clean(text: str) -> str:
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip().lower()


class SimpleTokenizer:
    def __init__(self, bpe_path: str | Path = VOCAB_PATH):
        bpe_path = Path(bpe_path)
        if not bpe_path.is_file():
            raise FileNotFoundError(f"CLIP BPE vocabulary not found: {bpe_path} (ships in assets/)")
        self.byte_encoder = _bytes_to_unicode()
        # merges stay "a b" strings (a symbol never holds a space: byte 32 is encoded as another character):
        # splitting 48,894 lines into tuples was most of a start's tokenizer time (issue 15)
        merges = gzip.open(bpe_path).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
        vocab = list(self.byte_encoder.values())
        vocab = vocab + [v + "</w>" for v in vocab] + [m.replace(" ", "") for m in merges]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        self.encoder = {v: i for i, v in enumerate(vocab)}
        self.bpe_ranks = dict(zip(merges, range(len(merges))))  # "a b" -> rank
        self.cache = {"<|startoftext|>": "<|startoftext|>", "<|endoftext|>": "<|endoftext|>"}
        self.pat = re.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
                              re.IGNORECASE)
        self.sot_token = self.encoder["<|startoftext|>"]
        self.eot_token = self.encoder["<|endoftext|>"]

    def bpe(self, token: str) -> str:
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        pairs = _get_pairs(word)
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(" ".join(pair), float("inf")))
            if " ".join(bigram) not in self.bpe_ranks:
                break
            first, second = bigram
            new_word: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = _get_pairs(word)
        out = " ".join(word)
        self.cache[token] = out
        return out

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for token in re.findall(self.pat, _clean(text)):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(token).split(" "))
        return ids


@functools.lru_cache(maxsize=1)
def _default_tokenizer() -> SimpleTokenizer:
    return SimpleTokenizer()


def tokenize(texts: str | list[str], context_length: int = 77) -> torch.Tensor:
    """Texts -> int64 tokens [N, context_length]: SOT, BPE ids, EOT, zero padding (truncated to fit, EOT kept)."""
    if isinstance(texts, str):
        texts = [texts]
    tok = _default_tokenizer()
    out = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = [tok.sot_token] + tok.encode(text) + [tok.eot_token]
        if len(ids) > context_length:
            ids = ids[:context_length]
            ids[-1] = tok.eot_token
        out[i, : len(ids)] = torch.tensor(ids)
    return out
