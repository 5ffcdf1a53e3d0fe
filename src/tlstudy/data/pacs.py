"""PACS as `fetch` and `pretrain` get it: the pinned archive (params `data.url`, `data.sha256`)
downloaded once to work/downloads (TLSTUDY_DOWNLOADS moves it), then the target domain
(`data.domain`) or the source domains unpacked from it by tlstudy.data.pacs_archive. A folder already complete at the
target path (a `dvc pull data.dvc`, a folder linked in by a profile) is used as it is, with no download.
Both stages use these helpers, and neither imports the other.
"""

from __future__ import annotations

import os
import sys
import urllib.parse
from pathlib import Path

from tlstudy import params as P
from tlstudy.data.download import DownloadError, download, sha256_of
from tlstudy.data.pacs_archive import (
    SOURCES_OFFICIAL,
    ArchiveError,
    pacs_complete,
    sources_complete,
    unpack_pacs,
    unpack_sources,
)

# Outside data/, which data.dvc pins; TLSTUDY_DOWNLOADS moves it to a cache that outlives the
# checkout (the container keeps it on its /cache volume).
DOWNLOADS = Path(os.environ.get("TLSTUDY_DOWNLOADS", "work/downloads"))
RETRIES, BACKOFF_S = 5, 2.0
OFFLINE_HINT = (
    "To use a copy you already have, set in params.yaml:\n"
    "  data:\n    source: local\n    path: /path/to/pacs_<domain>   # <class>/<file>.jpg, optional splits/\n"
    "or run `dvc pull data.dvc` from a DVC remote that holds data/, or try the demo: `make demo`."
)
SOURCES_HINT = (
    "To use a copy you already have, point the backbone at a folder of <domain>/<class>/<image>:\n"
    "  pretrain:\n    <name>:\n      source: local\n      path: /path/to/pacs_sources\n"
    "or try the demo: `make demo`."
)


def warn_provenance(what: str, how: str, stage: str = "fetch") -> None:
    bar = "!" * 100
    print(f"{bar}\n{stage}: WARNING: {what}: {how}.\n{bar}", file=sys.stderr)


def get_pacs(params: dict) -> Path:
    """The target domain's images at data.path: a complete folder of that domain there is used as
    it is, else the domain is unpacked from the archive."""
    root, domain = P.data_path(params), P.target_domain(params)
    if pacs_complete(root, domain):
        print(f"fetch: using the PACS {domain} images already in {root}")
        return root
    archive = download_pacs(params, OFFLINE_HINT)
    print(f"fetch: {archive} ({sha256_of(archive)[:12]}…) → {root} ({domain})")
    unpack_pacs(archive, root, OFFLINE_HINT, domain)
    return root


def download_pacs(params: dict, hint: str) -> Path:
    """The PACS archive (all four domains) in work/downloads/; a complete one is not fetched again."""
    cfg = params["data"]
    name = Path(urllib.parse.urlparse(cfg["url"]).path).name or "pacs.parquet"
    try:
        return download(cfg["url"], DOWNLOADS / name, cfg.get("sha256"), retries=RETRIES, backoff=BACKOFF_S)
    except DownloadError as exc:
        raise ArchiveError(f"could not download PACS: {exc}\n{hint}") from exc


def get_sources(params: dict, root: Path, domains: list[str], stage: str) -> Path:
    """PACS's other domains for pretraining, as <domain>/<class>/<image> under `root`: a complete
    folder there is used as it is, else they are unpacked from the archive fetch downloads."""
    if sources_complete(root, domains):
        print(f"{stage}: using the PACS source domains already in {root}")
        return root
    archive = download_pacs(params, SOURCES_HINT)
    print(f"{stage}: unpacking {', '.join(domains)} from {archive} → {root}")
    prov = unpack_sources(archive, root, domains, SOURCES_HINT)
    if prov["names"] != SOURCES_OFFICIAL:
        how = (
            f"{prov['matched_by_sha256']:,} of the {prov['official_images']:,} official images found by their bytes, "
            f"{prov['matched_by_name']:,} by name, {prov['from_archive_columns']:,} more rows named from the archive"
        )
        warn_provenance(f"source images {prov['names']}", how, stage)
    return root
