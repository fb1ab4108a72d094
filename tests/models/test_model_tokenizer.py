"""CLIP BPE tokenizer: ids equal OpenAI CLIP's (known ids) and transformers' CLIPTokenizer built offline from
the same vocabulary file (an independent BPE implementation)."""
from __future__ import annotations

import gzip

import pytest
import torch

import models
from models.tokenizer import VOCAB_PATH, SimpleTokenizer

# ids produced by OpenAI's clip.tokenize (its README example and the paper's prompts)
KNOWN = {
    "a photo of a cat": [49406, 320, 1125, 539, 320, 2368, 49407],
    "a diagram": [49406, 320, 22697, 49407],
    "a dog": [49406, 320, 1929, 49407],
}

STRINGS = [
    "a photo of a cat",
    "This is an image of a live face",
    "This is an image of a fake face",
    "A photo of a FAKE face.",
    "Hello, World! it's 2024... don't   stop",
    "naïve café résumé — über",
    "replay-attack on an iPhone 12 (OLED); print@300dpi",
]


def test_known_openai_ids():
    for text, ids in KNOWN.items():
        out = models.tokenize(text)
        assert out.shape == (1, 77) and out.dtype == torch.long
        assert out[0, : len(ids)].tolist() == ids
        assert (out[0, len(ids):] == 0).all()


def test_special_tokens_and_padding():
    out = models.tokenize(["", "a"], context_length=10)
    assert out.shape == (2, 10)
    assert out[0].tolist() == [49406, 49407] + [0] * 8
    assert out[1, :3].tolist() == [49406, 320, 49407]
    tok = SimpleTokenizer()
    assert (tok.sot_token, tok.eot_token) == (49406, 49407)
    assert len(tok.encoder) == 49408


def test_truncation_keeps_eot_last():
    out = models.tokenize("word " * 200)
    assert out.shape == (1, 77)
    assert out[0, 0] == 49406 and out[0, -1] == 49407
    assert (out[0] == 49407).sum() == 1  # EOT is the argmax the text tower pools at


def test_cleaning_like_openai():
    # html entities unescaped twice, whitespace collapsed, lower-cased (OpenAI's basic/whitespace clean)
    assert torch.equal(models.tokenize("A &amp;amp; B\t\n  C"), models.tokenize("a & b c"))


def test_missing_vocab_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt.gz"):
        SimpleTokenizer(tmp_path / "nope.txt.gz")


def _hf_tokenizer():
    """transformers' CLIPTokenizer built offline from assets/bpe_simple_vocab_16e6.txt.gz (no hub)."""
    transformers = pytest.importorskip("transformers")
    merges = gzip.open(VOCAB_PATH).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    vocab = dict(SimpleTokenizer().encoder)  # byte alphabet, +</w>, merges, specials: OpenAI's order
    try:  # transformers >= 5: vocab dict and merges list
        return transformers.CLIPTokenizer(vocab=vocab, merges=[tuple(m.split()) for m in merges])
    except TypeError:  # transformers 4: files
        import json
        import tempfile
        from pathlib import Path
        d = Path(tempfile.mkdtemp())
        (d / "vocab.json").write_text(json.dumps(vocab))
        (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        return transformers.CLIPTokenizer(vocab_file=str(d / "vocab.json"), merges_file=str(d / "merges.txt"))


def test_ids_equal_transformers_clip_tokenizer():
    hf = _hf_tokenizer()
    assert hf("a photo of a cat")["input_ids"] == KNOWN["a photo of a cat"]  # it was built right
    for text in STRINGS:
        ref = hf(text)["input_ids"]
        ours = models.tokenize(text)[0]
        assert ours[: len(ref)].tolist() == ref, text
        assert (ours[len(ref):] == 0).all(), text
