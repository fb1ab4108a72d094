"""Bundled assets verified by SHA-256: ``assets/SHA256SUMS`` (``sha256sum`` format) recorded in the repository.

The folder is ``ASSETS_DIR``: the copy inside an installed package (``pip install .``), else the checkout's
top-level ``assets/``. ``python -m liveness_app.ops.assets --write`` regenerates the file from the assets present
(run it after adding or replacing an asset, e.g. the bundled model, and commit the result); ``python -m liveness_app.ops.assets`` (or
``--check``) verifies them and exits 1 naming every missing or altered file. The scorer and ``--check`` call
``verify_file`` before loading a bundled file, so an altered or truncated asset is refused with a clear message.
Files listed in SHA256SUMS must match; files not listed (the model before it is added) are reported as
unlisted, never silently trusted as "verified".
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

SUMS_NAME = "SHA256SUMS"
# An installed package carries the assets inside itself (pyproject.toml maps the checkout's top-level assets/
# to liveness_app/bundled); a checkout (``python main.py``, tests) reads assets/ beside the package. Never the
# current folder: ``liveness`` works from anywhere.
PACKAGED_DIR = Path(__file__).resolve().parents[1] / "bundled"
CHECKOUT_DIR = Path(__file__).resolve().parents[2] / "assets"


def find_assets_dir() -> Path:
    """The folder of the bundled assets: the installed package's copy, else the checkout's assets/."""
    return PACKAGED_DIR if (PACKAGED_DIR / SUMS_NAME).is_file() else CHECKOUT_DIR


ASSETS_DIR = find_assets_dir()
# which files of assets/ are verified: everything shipped except documentation and the sums file itself
_SKIP_SUFFIXES = (".md", ".tmp")


class AssetError(ValueError):
    """An asset is missing, unlisted or does not match its recorded SHA-256; the message names it."""


def sha256_file(path: str | Path, chunk: int = 2 ** 20) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def asset_files(folder: Path = ASSETS_DIR) -> list[Path]:
    """The files of ``folder`` that get a recorded hash (sorted; no docs, no SHA256SUMS, no hidden files)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name != SUMS_NAME
                  and not p.name.startswith(".") and not p.name.endswith(_SKIP_SUFFIXES))


def read_sums(folder: Path = ASSETS_DIR) -> dict[str, str]:
    """File name -> recorded hex SHA-256 from ``folder/SHA256SUMS``; AssetError when it is missing or malformed."""
    sums_path = folder / SUMS_NAME
    if not sums_path.is_file():
        raise AssetError(f"{sums_path} is missing; regenerate it with `python -m liveness_app.ops.assets --write`")
    sums: dict[str, str] = {}
    for n, line in enumerate(sums_path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        digest, _, name = line.partition("  ")
        name = name.lstrip("*")
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) or not name:
            raise AssetError(f"{sums_path}:{n}: expected '<64 hex digits>  <file name>', got {line!r}")
        sums[name] = digest
    return sums


def write_sums(folder: Path = ASSETS_DIR) -> Path:
    """Hash every asset of ``folder`` and (re)write ``folder/SHA256SUMS``; returns its path."""
    lines = [f"{sha256_file(p)}  {p.name}" for p in asset_files(folder)]
    from models.atomic import write_text_atomic  # here, not at the top: liveness_app.ops needs no models
    return write_text_atomic(folder / SUMS_NAME, "\n".join(lines) + "\n")


@dataclass(frozen=True)
class AssetStatus:
    """One asset's check: name, state ("ok" | "missing" | "altered" | "unlisted") and a one-line detail."""

    name: str
    state: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "ok"


def check_assets(folder: Path = ASSETS_DIR) -> list[AssetStatus]:
    """Compare every listed asset with its recorded hash, and list assets present but not recorded."""
    sums = read_sums(folder)
    out = []
    for name, digest in sorted(sums.items()):
        path = folder / name
        if not path.is_file():
            out.append(AssetStatus(name, "missing", f"{path} is listed in {SUMS_NAME} but absent"))
            continue
        actual = sha256_file(path)
        out.append(AssetStatus(name, "ok", digest[:12]) if actual == digest else
                   AssetStatus(name, "altered", f"SHA-256 {actual[:12]}... != recorded {digest[:12]}... "
                                                f"({path.stat().st_size} bytes): restore it from the repository"))
    for path in asset_files(folder):
        if path.name not in sums:
            out.append(AssetStatus(path.name, "unlisted", f"{path.name} has no recorded hash; if it is a new "
                                                          "asset run `python -m liveness_app.ops.assets --write`"))
    return out


def _hash_cache_path() -> Path | None:
    try:
        from models.deploy.engine import cache_root
        return cache_root() / "asset-sha256.json"
    except Exception:  # noqa: BLE001 - no cache folder: hash every time
        return None


def sha256_cached(path: str | Path) -> str:
    """SHA-256 of ``path``, hashed once per change of the file: the digest is remembered in the user cache
    (``asset-sha256.json``) keyed by the resolved path, size, mtime (ns), inode and device, so a second start
    does not re-read the 28 MB model. Any change of the file (a rewrite, a copy over it, a truncation) changes
    the key and hashes it again; a damaged or unwritable cache file only costs the hash."""
    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}|{st.st_dev}"
    cache = _hash_cache_path()
    known: dict[str, str] = {}
    if cache is not None:
        try:
            known = json.loads(cache.read_text())
            if not isinstance(known, dict):
                known = {}
        except (OSError, ValueError):
            known = {}
        digest = known.get(key)
        if isinstance(digest, str) and len(digest) == 64:
            return digest
    digest = sha256_file(path)
    if cache is not None:
        known = {k: v for k, v in known.items() if not k.startswith(f"{path}|")}  # drop the stale entry
        known[key] = digest
        try:
            from models.atomic import write_text_atomic  # not at the top: liveness_app.ops needs no models
            write_text_atomic(cache, json.dumps(known, indent=0))
        except OSError:
            pass
    return digest


def verify_file(path: str | Path) -> str | None:
    """If ``path`` lies in a folder with a SHA256SUMS that lists it, check it; returns the digest checked.

    Returns None for files outside such a folder (a user's own checkpoint: the checkpoint's internal digests
    still apply). Raises AssetError naming the file when it is listed and its bytes differ.
    """
    path = Path(path)
    sums_path = path.parent / SUMS_NAME
    if not sums_path.is_file():
        return None
    sums = read_sums(path.parent)
    if path.name not in sums:
        return None
    actual = sha256_cached(path)  # hashed once per change of the file (size, mtime, inode)
    if actual != sums[path.name]:
        raise AssetError(f"{path} does not match its SHA-256 recorded in {sums_path} "
                         f"({actual[:12]}... != {sums[path.name][:12]}...): the file is altered or truncated; "
                         "restore it from the repository")
    return actual


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m liveness_app.ops.assets",
                                description="Verify (default) or record (--write) the SHA-256 of the bundled assets.")
    p.add_argument("--write", action="store_true", help="rewrite assets/SHA256SUMS from the files present")
    p.add_argument("--dir", default=str(ASSETS_DIR), help="assets folder (default: the project's assets/)")
    args = p.parse_args(argv)
    folder = Path(args.dir)
    if args.write:
        path = write_sums(folder)
        print(f"wrote {path} ({len(read_sums(folder))} files)")
        return 0
    try:
        statuses = check_assets(folder)
    except AssetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for s in statuses:
        print(f"{s.state:<9} {s.name}  {s.detail}")
    return 0 if all(s.ok for s in statuses) else 1


if __name__ == "__main__":
    sys.exit(main())
