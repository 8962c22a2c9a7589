"""The prepare stage on the real mirror, from every kind of source, and on every kind of bad input."""

import functools
import http.server
import json
import threading
import zipfile
from pathlib import Path

import pytest

from distill_step_by_step.data.datasets import cqa_input
from distill_step_by_step.data.prepare import prepare
from distill_step_by_step.errors import DataError
from distill_step_by_step.jsonio import read_json, read_jsonl

EXPECTED = {
    ("cqa", "train"): 9741, ("cqa", "test"): 1221,
    ("svamp", "train"): 800, ("svamp", "test"): 200,
    ("esnli", "train"): 9842, ("esnli", "test"): 9824,
    ("anli1", "train"): 1000, ("anli1", "test"): 1000,
}


def test_counts_formats_and_ids(prepared):
    for (name, split), n in EXPECTED.items():
        rows = read_jsonl(prepared / name / f"{split}.jsonl")
        recorded = read_jsonl(prepared / name / "palm" / f"{split}.jsonl")
        assert len(rows) == n == len(recorded)
        assert len({r["id"] for r in rows}) == n
        assert [r["id"] for r in rows] == [r["id"] for r in recorded]
        assert all(r["input"] and r["label"] for r in rows)
    cqa = read_jsonl(prepared / "cqa" / "test.jsonl")[0]
    assert cqa["input"] == cqa_input(cqa["question"], cqa["choices"])
    assert cqa["input"].split("\n")[1:3] == ["Answer Choices:", f"(a) {cqa['choices'][0]}"]
    assert cqa["label"] in cqa["choices"]
    es = read_jsonl(prepared / "esnli" / "train.jsonl")[0]
    assert es["input"] == es["premise"] + "</s>" + es["hypothesis"]
    assert {r["label"] for r in read_jsonl(prepared / "esnli" / "test.jsonl")} == {"entailment", "neutral", "contradiction"}
    svamp = read_jsonl(prepared / "svamp" / "train.jsonl")
    # SVAMP ids recovered through the authors' RandomState(0) permutation of SVAMP.json
    assert all(r["id"].startswith("chal-") for r in svamp)
    summary = read_json(prepared / "summary.json")
    assert "dev split" in summary["datasets"]["esnli"]["note"]


def _serve(directory: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _rows(path: Path) -> dict:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*.jsonl"))}


def test_url_and_unpacked_folder_give_the_same_data(tmp_path, mirror, prepared):
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "datasets.zip").write_bytes(mirror.read_bytes())
    server = _serve(tmp_path / "www")
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/datasets.zip"
        prepare(url, tmp_path / "from_url", ["svamp", "anli1"])
    finally:
        server.shutdown()
    with zipfile.ZipFile(mirror) as zf:
        zf.extractall(tmp_path / "unpacked")
    prepare(str(tmp_path / "unpacked"), tmp_path / "from_dir", ["svamp", "anli1"])
    for out in ("from_url", "from_dir"):
        for name in ("svamp", "anli1"):
            assert _rows(tmp_path / out / name) == _rows(prepared / name)


def _rewrite(mirror: Path, dest: Path, edit) -> Path:
    """A copy of the mirror with some members changed: edit(name, bytes) -> bytes | None (None drops it)."""
    with zipfile.ZipFile(mirror) as src, zipfile.ZipFile(dest, "w") as out:
        for info in src.infolist():
            data = edit(info.filename, src.read(info))
            if data is not None:
                out.writestr(info.filename, data)
    return dest


def _prepare_fails(source: str, out: Path, match: str) -> DataError:
    (out / "old.txt").parent.mkdir(parents=True, exist_ok=True)
    (out / "old.txt").write_text("previous good output")
    with pytest.raises(DataError, match=match) as err:
        prepare(source, out, ["cqa", "svamp", "anli1"])
    # nothing half-written replaces the previous output, and no temporary folder is left behind
    assert (out / "old.txt").read_text() == "previous good output"
    assert [p.name for p in out.parent.iterdir() if p.name.endswith(".tmp")] == []
    return err.value


def test_missing_archive(tmp_path):
    _prepare_fails(str(tmp_path / "nope.zip"), tmp_path / "out", r"nope\.zip: archive not found")


def test_corrupt_archive(tmp_path, mirror):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(mirror.read_bytes()[: 200_000])
    _prepare_fails(str(bad), tmp_path / "out", r"bad\.zip: not a readable zip")
    flipped = bytearray(mirror.read_bytes())
    flipped[5000] ^= 0xFF  # inside the first member's data: CRC check catches it
    bad.write_bytes(bytes(flipped))
    _prepare_fails(str(bad), tmp_path / "out", r"bad\.zip: (corrupt archive|not a readable zip)")


def test_missing_file(tmp_path, mirror):
    src = _rewrite(mirror, tmp_path / "a.zip", lambda n, b: None if n.endswith("svamp_test.json") else b)
    _prepare_fails(str(src), tmp_path / "out", r"a\.zip!datasets/svamp/svamp_test\.json: missing file")


def test_malformed_json_line_names_file_and_line(tmp_path, mirror):
    def edit(name, data):
        if name.endswith("anli1_test.json"):
            lines = data.decode().splitlines()
            lines[6] = lines[6][:40]
            return "\n".join(lines).encode()
        return data

    src = _rewrite(mirror, tmp_path / "a.zip", edit)
    _prepare_fails(str(src), tmp_path / "out", r"a\.zip!datasets/anli1/anli1_test\.json:7: malformed JSON line")


def test_bad_field_names_file_and_line(tmp_path, mirror):
    def edit(name, data):
        if name.endswith("anli1_valid.json"):
            lines = data.decode().splitlines()
            row = json.loads(lines[2])
            row["label"] = 7
            lines[2] = json.dumps(row)
            return "\n".join(lines).encode()
        return data

    src = _rewrite(mirror, tmp_path / "a.zip", edit)
    _prepare_fails(str(src), tmp_path / "out", r"anli1_valid\.json:3: label should be 0, 1 or 2")


def test_completion_count_mismatch_names_the_files(tmp_path, mirror):
    def edit(name, data):
        if name.endswith("svamp/llm/train_CoT_1.json"):
            return json.dumps(json.loads(data)[:-1]).encode()
        return data

    src = _rewrite(mirror, tmp_path / "a.zip", edit)
    err = _prepare_fails(str(src), tmp_path / "out", r"799 completions for 800 examples")
    assert "svamp/llm/train_CoT_1.json" in str(err)


def test_missing_completions(tmp_path, mirror):
    src = _rewrite(mirror, tmp_path / "a.zip", lambda n, b: None if "anli1/llm/" in n else b)
    _prepare_fails(str(src), tmp_path / "out", r"anli1/llm/valid_CoT_0\.json: missing recorded teacher completions")


def test_unknown_dataset(tmp_path, mirror):
    with pytest.raises(ValueError, match="unknown dataset 'mnli'"):
        prepare(str(mirror), tmp_path / "out", ["mnli"])


def test_a_member_that_would_inflate_past_any_corpus_is_refused_before_it_is_inflated(tmp_path, mirror):
    import subprocess
    import sys

    from distill_step_by_step.data.archive import MAX_MEMBER_BYTES

    bomb = _rewrite(mirror, tmp_path / "bomb.zip", lambda n, b: b)
    with zipfile.ZipFile(bomb, "a", compression=zipfile.ZIP_DEFLATED) as zf, \
            zf.open("datasets/cqa/extra.json", "w", force_zip64=True) as member:
        zeros = bytes(1 << 20)
        for _ in range(MAX_MEMBER_BYTES // len(zeros) + 1):  # a few hundred kilobytes once deflated
            member.write(zeros)
    with zipfile.ZipFile(bomb) as zf:
        assert zf.getinfo("datasets/cqa/extra.json").compress_size < 2**20
    _prepare_fails(str(bomb), tmp_path / "out", r"bomb\.zip: member datasets/cqa/extra\.json inflates to "
                   r"269,484,032 bytes, more than the 268,435,456 any corpus here needs")
    # in a process of its own, which reports its own peak memory (VmHWM: ru_maxrss would carry over the peak of
    # the test process across exec): the refusal never holds the member in memory
    code = ("import sys; from distill_step_by_step.data.archive import DatasetArchive\n"
            "try:\n    DatasetArchive(sys.argv[1])\nexcept Exception as e:\n    print(e)\n"
            "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')))")
    out = subprocess.run([sys.executable, "-c", code, str(bomb)], capture_output=True, text=True, check=True)
    message, peak_kib = out.stdout.splitlines()
    assert "inflates to" in message and int(peak_kib) < 200 * 1024  # under 200 MB
