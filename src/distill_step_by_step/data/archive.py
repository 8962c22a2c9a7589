"""Read the authors' ``datasets.zip`` layout from a local zip, an unpacked folder or an http(s) URL."""

from __future__ import annotations

import json
import tempfile
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..errors import DataError
from ..jsonio import parse_jsonl_lines


# Far past the largest corpus file of the authors' archive (README "Data notes"): a member that large is not a
# corpus (a zip bomb inflates gigabytes from kilobytes), and reading it whole would take the machine's memory.
MAX_MEMBER_BYTES = 256 * 2**20


def is_url(source: str) -> bool:
    """True for http(s)/file URLs, False for plain local paths."""
    return urllib.parse.urlparse(source).scheme in {"http", "https", "file"}


def download(url: str, dest: Path, *, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` with a progress bar; the file appears only when complete."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (user-given data URL)
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tmp.open("wb") as fh, tqdm(total=total, unit="B", unit_scale=True, desc=f"download {url}") as bar:
                while chunk := resp.read(1 << 20):
                    fh.write(chunk)
                    bar.update(len(chunk))
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"could not download the archive: {exc}", path=url) from None
    tmp.replace(dest)
    return dest


class DatasetArchive:
    """The authors' corpora, ``datasets/<name>/...``, from a zip file or an unpacked directory.

    Paths given to the methods are relative to the ``datasets/`` root, e.g. ``cqa/cqa_train.json``.
    Every error names the archive and the member (and line, for JSON Lines).
    """

    def __init__(self, source: str, *, download_dir: str | Path | None = None):
        self.source = source
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        if is_url(source):
            if download_dir is None:
                self._tmpdir = tempfile.TemporaryDirectory(prefix="dss-archive-")
                download_dir = self._tmpdir.name
            name = Path(urllib.parse.urlparse(source).path).name or "datasets.zip"
            local = download(source, Path(download_dir) / name)
        else:
            local = Path(source).expanduser()
            if not local.exists():
                raise DataError("archive not found (data.source in params.yaml)", path=source)
        self.local_path = local
        self._zip: zipfile.ZipFile | None = None
        self._root: str
        if local.is_dir():
            root = local / "datasets" if (local / "datasets").is_dir() else local
            self._root = str(root)
        else:
            try:
                self._zip = zipfile.ZipFile(local)
                self._check_sizes()
                bad = self._zip.testzip()
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
                raise DataError(f"not a readable zip archive ({exc})", path=source) from None
            if bad is not None:
                raise DataError(f"corrupt archive: CRC check failed for member {bad}", path=source)
            self._root = self._find_zip_root()

    def _check_sizes(self) -> None:
        """Refuse a member that would inflate past MAX_MEMBER_BYTES before anything is inflated: members are
        read whole, and zipfile never inflates past a member's declared size, so the declared size bounds it."""
        assert self._zip is not None
        for info in self._zip.infolist():
            if info.file_size > MAX_MEMBER_BYTES:
                raise DataError(f"member {info.filename} inflates to {info.file_size:,} bytes, more than the "
                                f"{MAX_MEMBER_BYTES:,} any corpus here needs: not reading it", path=self.source)

    def _find_zip_root(self) -> str:
        assert self._zip is not None
        names = self._zip.namelist()
        if any(n.startswith("datasets/") for n in names):
            return "datasets/"
        if any("/" in n for n in names):
            return ""
        raise DataError("archive has no datasets/<name>/ folders", path=self.source)

    def close(self) -> None:
        """Release the zip handle and any downloaded temporary copy."""
        if self._zip is not None:
            self._zip.close()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()

    def __enter__(self) -> "DatasetArchive":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def where(self, member: str) -> str:
        """How error messages name a member: ``<source>!datasets/<member>``."""
        return f"{self.source}!datasets/{member}"

    def has(self, member: str) -> bool:
        """Whether the member exists."""
        if self._zip is None:
            return (Path(self._root) / member).is_file()
        try:
            self._zip.getinfo(self._root + member)
            return True
        except KeyError:
            return False

    def read_text(self, member: str) -> str:
        """Read a member as UTF-8 text; a missing member raises DataError naming it."""
        if not self.has(member):
            raise DataError("missing file in the archive", path=self.where(member))
        try:
            if self._zip is None:
                return (Path(self._root) / member).read_text(encoding="utf-8")
            return self._zip.read(self._root + member).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path=self.where(member)) from None

    def read_jsonl(self, member: str) -> list[dict[str, Any]]:
        """Read a JSON Lines member (errors name the member and line)."""
        return parse_jsonl_lines(self.read_text(member).splitlines(), self.where(member))

    def read_json(self, member: str) -> Any:
        """Read a JSON member."""
        try:
            return json.loads(self.read_text(member))
        except json.JSONDecodeError as exc:
            raise DataError(f"malformed JSON ({exc.msg})", path=self.where(member), line=exc.lineno) from None

