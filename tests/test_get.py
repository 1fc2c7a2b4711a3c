"""``python -m imagebart_core.get`` against a local HTTP server that serves zips made from the parity fixtures.

The server (http.server in a thread, on 127.0.0.1) plays ommer-lab.com (model zips, vqgan.zip) and GitHub
(the repository's configs and data files), supports Range requests, answers 404, and can drop the connection
in the middle of a file. No other network is used.
"""

from __future__ import annotations

import ast
import errno
import http.server
import io
import threading
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from imagebart_core import get as get_cmd
from imagebart_core.original import download as dl
from imagebart_core.original.convert import convert_release, locate_release

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT.parent / "shared" / "reference" / "official-fixtures"
NAME = "ffhq_4_scales_geometric"

pytestmark = pytest.mark.skipif(not (FIXTURES / NAME / "models").is_dir(),
                                reason=f"original-format fixtures not found at {FIXTURES} (../shared is read at test time)")


# -- the fixture release as published zips --------------------------------------------------------------------
def _zip(entries: dict[str, Path]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for arcname, path in entries.items():
            zf.write(path, arcname)
    return buf.getvalue()


def model_zip(nested: bool) -> bytes:
    src = FIXTURES / NAME / "models" / NAME
    prefix = f"{NAME}/" if nested else ""
    return _zip({prefix + p.name: p for p in sorted(src.glob("scale*.ckpt"))})


def vqgan_zip(nested: bool) -> bytes:
    src = FIXTURES / NAME / "vqgan" / "vqgan-ffhq.ckpt"
    return _zip({("vqgan/" if nested else "") + src.name: src})


def repo_files() -> dict[str, bytes]:
    root = FIXTURES / NAME
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and p.relative_to(root).parts[0] in ("configs", "data")}


@pytest.fixture(scope="module")
def zips() -> dict[bool, dict[str, bytes]]:
    return {nested: {f"{NAME}.zip": model_zip(nested), "vqgan.zip": vqgan_zip(nested)} for nested in (False, True)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, Path]:
    """The fixture release converted by the release-folder route (fp32 and fp16)."""
    base = tmp_path_factory.mktemp("reference")
    return {dt: convert_release(locate_release(FIXTURES / NAME, NAME), base / f"{dt}.safetensors", hash_files=False,
                                dtype=dl_dtype(dt)) for dt in ("fp32", "fp16")}


def dl_dtype(name: str):
    from imagebart_core.original.sizes import STORAGE_DTYPES

    return STORAGE_DTYPES[name]


# -- the server -------------------------------------------------------------------------------------------------
class Server:
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.drop_once: dict[str, int] = {}  # path -> after how many bytes to cut the first full-body answer
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self, body: bool):
                owner.requests.append((self.command, self.path, self.headers.get("Range")))
                data = owner.files.get(self.path)
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if not body:
                    return
                cut = owner.drop_once.pop(self.path, None) if not rng else None
                if cut is not None:
                    self.wfile.write(data[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                try:
                    self.wfile.write(data[start:])
                except (ConnectionError, BrokenPipeError):  # the client went away (the Ctrl-C test)
                    self.close_connection = True

            def do_GET(self):
                self._answer(True)

            def do_HEAD(self):
                self._answer(False)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def publish(self, zips: dict[str, bytes]) -> None:
        self.files = {f"/files/{k}": v for k, v in zips.items()}
        self.files.update({f"/repo/{k}": v for k, v in repo_files().items()})

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def run_get(server: Server, tmp_path: Path, *extra: str, name: str = NAME) -> tuple[int, Path]:
    models = tmp_path / "models"
    args = [name, "--dir", str(models), "--cache", str(tmp_path / "cache"), "--mirror", server.url + "/files/",
            "--repo-url", server.url + "/repo/", "--retry-wait", "0", "--timeout", "10", *extra]
    return get_cmd.main(args), models


def tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def assert_same_tensors(a: Path, b: Path) -> None:
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert ta[k].dtype == tb[k].dtype and torch.equal(ta[k], tb[k]), k


def in_models(models: Path) -> list[str]:
    return sorted(str(p.relative_to(models)) for p in models.rglob("*")) if models.exists() else []


# -- download route ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("nested", [False, True], ids=["files-at-top", "model-folder"])
def test_get_downloads_and_converts_to_the_same_tensors(server, zips, reference, tmp_path, nested, caplog):
    server.publish(zips[nested])
    rc, models = run_get(server, tmp_path, "--dtype", "fp16")
    assert rc == 0
    out = models / f"{NAME}-fp16.safetensors"
    assert in_models(models) == [out.name]
    assert_same_tensors(out, reference["fp16"])
    import imagebart_core as ib

    src = ib.read_config(out).source
    assert src["stored_dtype"] == "fp16" and src["obtained_with"] == "python -m imagebart_core.get"
    got = {d["file"]: d for d in src["downloads"]}
    import hashlib

    for zname in (f"{NAME}.zip", "vqgan.zip"):
        assert got[zname]["sha256"] == hashlib.sha256(zips[nested][zname]).hexdigest()
        assert got[zname]["url"] == f"{server.url}/files/{zname}"
    repo = [d for f, d in got.items() if f.endswith("configs/sampling/ffhq/ffhq_4_scales_geometric.yaml")]
    assert len(repo) == 1 and repo[0]["url"].startswith(server.url + "/repo/") and len(repo[0]["sha256"]) == 64
    assert not list((tmp_path / "cache").rglob("*.*"))  # downloads deleted (no --keep)
    # a second run skips the existing file and leaves it alone
    before = out.stat().st_mtime_ns
    assert run_get(server, tmp_path, "--dtype", "fp16")[0] == 0
    assert out.stat().st_mtime_ns == before


def test_dropped_connection_resumes_with_range_and_gives_the_same_file(server, zips, reference, tmp_path):
    server.publish(zips[True])
    size = len(zips[True][f"{NAME}.zip"])
    server.drop_once[f"/files/{NAME}.zip"] = size // 3
    rc, models = run_get(server, tmp_path, "--dtype", "fp32", "--keep")
    assert rc == 0
    ranges = [r for m, p, r in server.requests if p == f"/files/{NAME}.zip" and m == "GET"]
    assert ranges == [None, f"bytes={size // 3}-"]  # the second request asked for the rest only
    assert (tmp_path / "cache" / f"{NAME}.zip").read_bytes() == zips[True][f"{NAME}.zip"]  # --keep
    assert_same_tensors(models / f"{NAME}-fp32.safetensors", reference["fp32"])


@pytest.mark.slow
def test_interrupted_run_leaves_a_part_that_the_next_run_resumes(server, zips, reference, tmp_path, monkeypatch):
    server.publish(zips[False])
    size = len(zips[False][f"{NAME}.zip"])
    server.drop_once[f"/files/{NAME}.zip"] = size // 2
    rc, models = run_get(server, tmp_path, "--dtype", "fp32", "--retries", "0")
    assert rc == 1 and in_models(models) == []
    part = tmp_path / "cache" / f"{NAME}.zip.part"
    assert part.stat().st_size == size // 2
    rc, models = run_get(server, tmp_path, "--dtype", "fp32")
    assert rc == 0
    assert [r for m, p, r in server.requests if p == f"/files/{NAME}.zip" and m == "GET"][-1] == f"bytes={size // 2}-"
    assert_same_tensors(models / f"{NAME}-fp32.safetensors", reference["fp32"])


def test_corrupt_zip_stops_clearly_and_leaves_nothing(server, zips, tmp_path, capsys):
    bad = bytearray(zips[True][f"{NAME}.zip"])
    mid = len(bad) // 2
    bad[mid:mid + 64] = bytes(64)  # flip bytes inside a member: its CRC no longer matches
    server.publish({**zips[True], f"{NAME}.zip": bytes(bad)})
    rc, models = run_get(server, tmp_path)
    err = capsys.readouterr().err
    assert rc == 1 and "corrupt" in err and f"{NAME}.zip" in err
    assert in_models(models) == []
    assert not (tmp_path / "cache" / f"{NAME}.zip").exists()  # deleted, so the next run downloads it anew
    assert not list((tmp_path / "cache").rglob("*.ckpt"))


def test_truncated_zip_stops_clearly(server, zips, tmp_path, capsys):
    server.publish({**zips[True], "vqgan.zip": zips[True]["vqgan.zip"][:-100]})
    rc, models = run_get(server, tmp_path)
    err = capsys.readouterr().err
    assert rc == 1 and "vqgan.zip" in err and ("corrupt" in err or "truncated" in err)
    assert in_models(models) == []


def test_404_stops_clearly_and_leaves_nothing(server, zips, tmp_path, capsys):
    server.publish({k: v for k, v in zips[True].items() if k != f"{NAME}.zip"})
    rc, models = run_get(server, tmp_path)
    err = capsys.readouterr().err
    assert rc == 1 and "HTTP 404" in err and f"/files/{NAME}.zip" in err
    assert in_models(models) == []


def test_unreachable_server_stops_clearly(tmp_path, capsys):
    models = tmp_path / "models"
    rc = get_cmd.main([NAME, "--dir", str(models), "--cache", str(tmp_path / "c"), "--mirror", "http://127.0.0.1:9/",
                       "--repo-url", "http://127.0.0.1:9/", "--retries", "0", "--retry-wait", "0"])
    err = capsys.readouterr().err
    assert rc == 1 and "127.0.0.1:9" in err and in_models(models) == []


def test_full_disk_while_downloading_stops_clearly(server, zips, tmp_path, monkeypatch, capsys):
    server.publish(zips[True])
    real_open = open

    class FullDisk:
        def __init__(self, fh):
            self.fh, self.n = fh, 0

        def write(self, b):
            self.n += len(b)
            if self.n > 1000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.fh.write(b)

        def __getattr__(self, k):
            return getattr(self.fh, k)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.fh.close()

    def fake_open(path, mode="r", *a, **k):
        fh = real_open(path, mode, *a, **k)
        return FullDisk(fh) if str(path).endswith(f"{NAME}.zip.part") else fh

    monkeypatch.setattr(dl, "open", fake_open, raising=False)
    rc, models = run_get(server, tmp_path)
    err = capsys.readouterr().err
    assert rc == 1 and "disk is full" in err and "resume" in err
    assert in_models(models) == []


@pytest.mark.slow
def test_full_disk_while_writing_the_model_leaves_nothing(server, zips, tmp_path, monkeypatch, capsys):
    from imagebart_core import fileio as st_writer  # the one safetensors writer

    server.publish(zips[True])
    real = st_writer.StreamingSafetensorsWriter.write
    calls = [0]

    def write(self, name, tensor):
        calls[0] += 1
        if calls[0] == 20:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, name, tensor)

    monkeypatch.setattr(st_writer.StreamingSafetensorsWriter, "write", write)
    rc, models = run_get(server, tmp_path)
    err = capsys.readouterr().err
    assert rc == 1 and "disk is full" in err
    assert in_models(models) == []


def test_not_enough_space_is_found_before_the_first_byte(server, zips, tmp_path, monkeypatch, capsys):
    server.publish(zips[True])
    monkeypatch.setattr(dl, "free_bytes", lambda folder: 1000)
    rc, models = run_get(server, tmp_path)
    err = capsys.readouterr().err
    assert rc == 1 and "not enough free disk space" in err and "needs" in err
    assert not [r for r in server.requests if r[0] == "GET" and r[1].endswith(".zip")]  # not one byte fetched
    assert in_models(models) == []


def test_ctrl_c_keeps_the_part_and_leaves_nothing(server, zips, tmp_path, monkeypatch, capsys):
    server.publish(zips[True])

    class Interrupt:
        def __init__(self, *a, **k):
            self.n = 0

        def update(self, done):
            self.n += 1
            if done > 5000:
                raise KeyboardInterrupt

        def finish(self):
            pass

    monkeypatch.setattr(dl, "ProgressLine", Interrupt)
    rc, models = run_get(server, tmp_path)
    err = capsys.readouterr().err
    assert rc == 130 and "interrupted" in err and "resume" in err
    assert in_models(models) == []
    assert (tmp_path / "cache" / f"{NAME}.zip.part").is_file()


# -- --from: offline -------------------------------------------------------------------------------------------
def _repo_clone(base: Path) -> Path:
    clone = base / "imagebart"
    for rel, data in repo_files().items():
        (clone / rel).parent.mkdir(parents=True, exist_ok=True)
        (clone / rel).write_bytes(data)
    return clone


@pytest.mark.parametrize("nested", [pytest.param(False, marks=pytest.mark.slow), True],
                         ids=["files-at-top", "model-folder"])
def test_from_zips_offline(zips, reference, tmp_path, nested, monkeypatch):
    monkeypatch.setattr(dl, "_open", lambda *a, **k: pytest.fail("--from must not use the network"))
    dls = tmp_path / "Downloads"
    dls.mkdir()
    for k, v in zips[nested].items():
        (dls / k).write_bytes(v)
    clone = _repo_clone(tmp_path)
    models = tmp_path / "models"
    rc = get_cmd.main([NAME, "--from", str(dls), "--from", str(clone), "--dir", str(models), "--cache",
                       str(tmp_path / "cache"), "--dtype", "fp32"])
    assert rc == 0
    assert_same_tensors(models / f"{NAME}-fp32.safetensors", reference["fp32"])
    assert sorted(p.name for p in dls.iterdir()) == sorted(zips[nested])  # the user's files are untouched
    import imagebart_core as ib

    local = ib.read_config(models / f"{NAME}-fp32.safetensors").source["local_files"]
    assert {Path(d["file"]).name for d in local} == {f"{NAME}.zip", "vqgan.zip"}


@pytest.mark.parametrize("nested", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["files-at-top", "model-folder"])
def test_from_extracted_folders_offline(reference, tmp_path, nested, monkeypatch):
    monkeypatch.setattr(dl, "_open", lambda *a, **k: pytest.fail("--from must not use the network"))
    ex = tmp_path / "extracted"
    model_dir = ex / NAME if nested else ex
    model_dir.mkdir(parents=True)
    for p in (FIXTURES / NAME / "models" / NAME).glob("scale*.ckpt"):
        (model_dir / p.name).symlink_to(p)
    vq = ex / "vqgan" if nested else ex
    vq.mkdir(exist_ok=True)
    (vq / "vqgan-ffhq.ckpt").symlink_to(FIXTURES / NAME / "vqgan" / "vqgan-ffhq.ckpt")
    clone = _repo_clone(tmp_path)
    models = tmp_path / "models"
    rc = get_cmd.main([NAME, "--from", str(ex), "--from", str(clone), "--dir", str(models), "--cache",
                       str(tmp_path / "cache"), "--dtype", "fp32"])
    assert rc == 0
    assert_same_tensors(models / f"{NAME}-fp32.safetensors", reference["fp32"])


def test_from_a_folder_that_does_not_fit_lists_what_it_found(tmp_path, capsys):
    odd = tmp_path / "odd"
    (odd / "weights").mkdir(parents=True)
    (odd / "weights" / "model.ckpt").write_bytes(b"x")
    (odd / "readme.txt").write_text("hi")
    models = tmp_path / "models"
    rc = get_cmd.main([NAME, "--from", str(odd), "--dir", str(models), "--cache", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert rc == 1 and "scale1.ckpt" in err and "Found:" in err and "readme.txt" in err and "weights/" in err
    assert in_models(models) == []


# -- the command's other parts --------------------------------------------------------------------------------
def test_list_names_every_release_with_sizes_per_dtype(capsys):
    assert get_cmd.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in get_cmd.RELEASES:
        assert name in out
    assert "12.72 GB" in out and "6.51 GB" in out  # cin_5_scales_custom fp32 / fp16
    assert "No text-conditional" in out


def test_unknown_name_and_missing_destination(tmp_path, capsys, monkeypatch):
    assert get_cmd.main(["sd15", "--dir", str(tmp_path)]) == 2
    assert "unknown model sd15" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(get_cmd, "find_comfyui_root", lambda *a: None)
    with pytest.raises(SystemExit, match="--comfyui DIR"):
        get_cmd.main([NAME])


def test_comfyui_tree_is_found_and_its_model_folder_used(tmp_path, monkeypatch):
    root = tmp_path / "ComfyUI"
    (root / "comfy").mkdir(parents=True)
    (root / "folder_paths.py").write_text("")
    pack = root / "custom_nodes" / "imagebart"
    pack.mkdir(parents=True)
    assert get_cmd.find_comfyui_root(pack) == root
    args = get_cmd.build_parser().parse_args([NAME, "--comfyui", str(root)])
    assert get_cmd.models_folder(args) == root / "models" / "imagebart"
    monkeypatch.chdir(pack)
    args = get_cmd.build_parser().parse_args([NAME])
    assert get_cmd.models_folder(args) == root / "models" / "imagebart"


def test_no_library_or_node_module_imports_the_downloader():
    """Only the get command may use the network: no other module names the download module."""
    offenders = []
    for path in [*(REPO_ROOT / "imagebart_core").rglob("*.py"), *(REPO_ROOT / "nodes").rglob("*.py"),
                 REPO_ROOT / "__init__.py", *(REPO_ROOT / "training").rglob("*.py")]:
        if path.name in ("get.py", "download.py"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [(node.module or "")] + [f"{node.module}.{a.name}" for a in node.names]
            if any(n.endswith("download") or "urllib" in n or n.endswith(".get") or n == "get" for n in names):
                offenders.append(f"{path.relative_to(REPO_ROOT)}: {names}")
    assert offenders == []


def test_fp16_storage_refuses_weights_beyond_its_range(tmp_path, monkeypatch):
    """A weight above 65504 would become inf in fp16: the conversion stops, naming the tensor, and writes nothing."""
    from imagebart_core.original import convert as conv

    real = conv.state_dict_of

    def boosted(ckpt, where):
        sd = real(ckpt, where)
        if str(where).endswith("scale2.ckpt"):
            key = next(k for k in sd if k.startswith("transformer_ema.") and sd[k].is_floating_point()
                       and sd[k].numel() > 1)
            sd = dict(sd)
            sd[key] = sd[key].clone()
            sd[key].view(-1)[0] = 70000.0
        return sd

    monkeypatch.setattr(conv, "state_dict_of", boosted)
    out = tmp_path / "m" / "x.safetensors"
    with pytest.raises(conv.ConversionError, match="beyond float16's range.*--dtype bf16"):
        convert_release(locate_release(FIXTURES / NAME, NAME), out, hash_files=False, dtype=dl_dtype("fp16"))
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
