"""Where ferqueue's files live: local folders only, or an object store behind them.

Three areas hold files the ledger points at: the store (shards, outcomes, merged manifests),
the model artifacts and the dataset cache. Each is an ``Area``: a local folder and, when
``FERQUEUE_STORE_URL=s3://bucket/prefix`` is set, a prefix of that URL (``store/``,
``models/``, ``datasets/``) where the files really live. Files are always written locally
first (atomically, with their sha256: ``ferqueue.files``), then ``put`` uploads them, and only
then does the caller record them. ``get`` gives a local path: in the folder mode the file
itself; with an object store a copy in this host's folder (a cache under its own
FERQUEUE_HOME), downloaded when missing or different and checked against the sha256 the
ledger recorded. Workers on hosts that share no disk reach the same files this way.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ferqueue.errors import ConfigError, StoreError
from ferqueue.files import verified_once, write_atomically

AREAS = ("store", "models", "datasets")


class Area:
    """One area: ``root`` (a local folder) and ``url`` (its object-store prefix, or None)."""

    def __init__(self, root: Path, url: str | None = None, endpoint_url: str | None = None):
        self.root = Path(root)
        self.url = url
        self.endpoint_url = endpoint_url
        self._fs = None
        self._pid = None

    @property
    def remote(self) -> bool:
        return self.url is not None

    # -- paths -------------------------------------------------------------------------------------

    def local(self, rel: str | Path) -> Path:
        """Where a file of this area is (or will be) on this host; an absolute path stays as it is."""
        return self.root / rel

    def relative(self, path: str | Path) -> str:
        return str(Path(path).resolve().relative_to(self.root.resolve()))

    def _key(self, rel: str) -> str:
        return f"{self.url.removeprefix('s3://')}/{rel}"

    def fs(self):
        """This process's s3fs filesystem (made again after a fork: its event loop does not survive one)."""
        if self._fs is None or self._pid != os.getpid():
            try:
                import s3fs
            except ImportError:
                raise ConfigError("FERQUEUE_STORE_URL needs s3fs: pip install 'ferqueue[s3]'") from None
            client = {"endpoint_url": self.endpoint_url} if self.endpoint_url else {}
            self._fs = s3fs.S3FileSystem(client_kwargs=client, skip_instance_cache=True, use_listings_cache=False)
            self._pid = os.getpid()
        return self._fs

    # -- files -------------------------------------------------------------------------------------

    def put(self, path: str | Path) -> str:
        """A file written under ``root`` (by ``files.write_atomically``), uploaded to the object
        store when there is one; returns its path relative to ``root``, as the ledger records it."""
        rel = self.relative(path)
        if self.remote:
            self.fs().put_file(str(path), self._key(rel))
        return rel

    def get(self, rel: str, sha256: str | None = None, size_bytes: int | None = None) -> Path:
        """A local path to the file ``rel``. With an object store it is downloaded into ``root``
        when missing here (or, given ``sha256``, different) and checked against ``sha256``: a file
        missing or altered in the object store is a StoreError. In the folder mode the callers
        check what they read, as they always did."""
        local = self.local(rel)
        if not self.remote or Path(rel).is_absolute():
            return local
        if local.is_file():
            if sha256 is None:
                return local
            try:
                verified_once(local, sha256, size_bytes)
                return local
            except StoreError:
                pass  # a damaged local copy: fetched again
        key = self._key(rel)
        fs = self.fs()
        if not fs.exists(key):
            raise StoreError(f"{self.url}/{rel} is missing from the object store")

        def download(tmp: Path) -> None:
            fs.get_file(key, str(tmp))

        _final, sha = write_atomically(local.parent, download, lambda _sha: local.name, prefix=f".{local.name}.",
                                       suffix=".download")
        if sha256 is not None and sha != sha256:
            local.unlink(missing_ok=True)
            raise StoreError(f"{self.url}/{rel} was altered: sha256 {sha[:12]}…, ledger {sha256[:12]}…")
        return local

    def exists(self, rel: str) -> bool:
        return self.fs().exists(self._key(rel)) if self.remote else self.local(rel).is_file()

    def delete(self, rel: str) -> None:
        """Remove a file here and from the object store (nothing when it is already gone)."""
        self.local(rel).unlink(missing_ok=True)
        if self.remote:
            try:
                self.fs().rm_file(self._key(rel))
            except FileNotFoundError:
                pass

    def names(self, folder: str) -> set[str]:
        """The files of a folder of this area, here and in the object store."""
        here = {p.name for p in self.local(folder).iterdir() if p.is_file()} if self.local(folder).is_dir() else set()
        if not self.remote:
            return here
        try:
            there = {Path(key).name for key in self.fs().ls(self._key(folder), detail=False)}
        except FileNotFoundError:
            there = set()
        return here | there

    def clear_local(self, rel: str) -> None:
        """Forget this host's copy of a file (the object store keeps it)."""
        if self.remote:
            self.local(rel).unlink(missing_ok=True)


class Objects:
    """The three areas of one set of settings."""

    def __init__(self, settings):
        url = settings.store_url
        roots = {"store": settings.store_root, "models": settings.artifact_root, "datasets": settings.cache_dir}
        self.areas = {name: Area(root, f"{url}/{name}" if url else None, settings.s3_endpoint_url)
                      for name, root in roots.items()}

    @property
    def store(self) -> Area:
        return self.areas["store"]

    @property
    def models(self) -> Area:
        return self.areas["models"]

    @property
    def datasets(self) -> Area:
        return self.areas["datasets"]


def copy_into(area: Area, source: str | Path, rel: str) -> str:
    """Copy a file from outside an area into it (and the object store): its ledger path."""
    target = area.local(rel)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(target.parent, lambda tmp: shutil.copyfile(source, tmp), lambda _sha: target.name,
                     prefix=f".{target.name}.")
    return area.put(target)
