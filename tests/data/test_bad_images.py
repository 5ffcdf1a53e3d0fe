"""Every image the decoder refuses is a bad image: listed with its reason under
`data.on_bad_image: error`, skipped and reported under `skip`, never a traceback. The files are
planted: decompression bombs (tiny files whose headers claim hundreds of millions of pixels),
a truncated JPEG, text and garbage with image suffixes, an empty file."""

import shutil
import struct
import zlib

import pytest
import yaml

from tlstudy.cli import main
from tlstudy.data import images as D
from tlstudy.data import synthetic


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(width: int, height: int, idat: bytes) -> bytes:
    """A 1-bit grayscale PNG of any claimed size."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def gif(width: int, height: int) -> bytes:
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
    return screen + b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00\x3b"


# name -> (bytes, what the reason must say); the first three ended fetch with a traceback (the
# bombs over twice PIL's limit) or were decoded whole, 90 M pixels, for a 32 px cache (the one
# between the limit and twice it, for which PIL only warns).
def planted(good_jpeg: bytes) -> dict[str, tuple[bytes, str]]:
    bomb = "refused as a possible decompression bomb"
    return {
        "bomb.png": (png(20000, 20000, zlib.compress(b"\0" * 64)), f"{bomb}: 400,000,000 pixels"),
        "bomb_warning.png": (png(10000, 9000, zlib.compress(b"\0" * (1251 * 9000), 9)), f"{bomb}: 90,000,000 pixels"),
        # GIF bytes under an image name (a .gif is no image by name: ImageFolder does not take it)
        "huge-gif.png": (gif(30000, 30000), f"{bomb}: 900,000,000 pixels"),
        "truncated.jpg": (good_jpeg[: len(good_jpeg) // 2], "not a readable image"),
        "text.jpg": (b"hello, not a picture\n", "not a readable image (not a format PIL knows"),
        "garbage.png": (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "not a readable image"),
        "empty.jpg": (b"", "empty file"),
    }


@pytest.fixture
def folder(tmp_path):
    """A class-folder data set of real JPEGs with the bad files planted among the circles."""
    root = synthetic.generate(tmp_path / "data", per_class=4, size=48, seed=1)
    bad = planted((root / "circle" / "img_000.jpg").read_bytes())
    for name, (blob, _) in bad.items():
        (root / "circle" / name).write_bytes(blob)
    return root, bad


def test_each_refusal_is_listed_with_its_reason_then_skipped_on_request(folder):
    root, bad = folder
    classes, entries = D.scan(root)
    with pytest.raises(D.DataError) as err:
        D.build_cache(root, entries, classes, 32, "error")
    message = str(err.value)
    assert message.startswith(f"{len(bad)} unreadable image(s) under {root}:")
    for name, (_, why) in bad.items():
        assert f"{root / 'circle' / name}: {why}" in message, name
    assert message.endswith("fix or remove them, or set data.on_bad_image: skip to leave them out")

    cache, skipped = D.build_cache(root, entries, classes, 32, "skip")
    assert sorted(e.path for e, _ in skipped) == sorted(f"circle/{n}" for n in bad)
    assert len(cache["paths"]) == 7 * 4 and not set(cache["paths"]) & {f"circle/{n}" for n in bad}
    assert all(e.excluded.startswith("unreadable: ") for e in entries if e.path.split("/")[1] in bad)


def test_the_fetch_stage_ends_with_one_error_line_or_skips_and_reports(folder, in_tmp, params, capsys):
    root, bad = folder
    params["data"].update(source="local", path=str(root), on_bad_image="error")
    params["fewshot"]["per_class"] = 2  # the folder has 4 images per class, one of them for testing
    (in_tmp / "params.yaml").write_text(yaml.safe_dump(params))
    assert main(["fetch"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 7 unreadable image(s)") and "Traceback" not in err
    assert not (in_tmp / "manifest.csv").exists()

    params["data"]["on_bad_image"] = "skip"
    (in_tmp / "params.yaml").write_text(yaml.safe_dump(params))
    assert main(["fetch"]) == 0
    out = capsys.readouterr().out
    for name, (_, why) in bad.items():
        assert f"fetch: warning: skipped {root / 'circle' / name}: {why}" in out
    rows = D.read_manifest(in_tmp / "manifest.csv")
    assert {r.path for r in rows if r.excluded.startswith("unreadable")} == {f"circle/{n}" for n in bad}


def test_pretrainings_decoding_refuses_them_with_the_same_message(folder, tmp_path):
    from tlstudy.stages import pretrain

    root, bad = folder
    sources = tmp_path / "sources"
    shutil.copytree(root, sources / "photo")
    entries = pretrain.scan(sources, ["photo"], sorted(synthetic.CLASSES))
    with pytest.raises(D.DataError, match=r"7 unreadable image\(s\)") as err:
        D.build_cache(sources, entries, sorted(synthetic.CLASSES), 32, "error")
    assert "photo/circle/bomb.png: refused as a possible decompression bomb" in str(err.value)


def test_odd_modes_are_converted_not_refused(tmp_path):
    from PIL import Image

    cases = {
        "gray16.png": Image.new("I;16", (20, 30), 40000),
        "float.tiff": Image.new("F", (20, 30), 0.5),
        "int32.tiff": Image.new("I", (20, 30), 70000),
        "la.png": Image.new("LA", (20, 30), (120, 200)),
        "bilevel.png": Image.new("1", (20, 30), 1),
        "lab.tiff": Image.new("LAB", (20, 30), (50, 0, 0)),
        "ycbcr.jpg": Image.new("YCbCr", (20, 30), (120, 128, 128)),
    }
    palette = Image.new("P", (20, 30), 1)
    palette.info["transparency"] = 0
    cases["palette.png"] = palette
    for name, im in cases.items():
        im.save(tmp_path / name)
        x = D.decode(tmp_path / name, 32)
        assert x.shape == (3, 32, 32), name
