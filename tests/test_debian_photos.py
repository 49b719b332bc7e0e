"""Photographs from Debian's archive: DEP-5 licences, .deb reading, the fetch and its "not run" outcomes."""

import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from icdlib.data import dep5
from icdlib.data.build import main
from icdlib.data.deb_archive import DebError, read_members
from icdlib.data.debian_photos import PACKAGES, DebPackage, NotRun, PhotoSet, fetch_photos, licence_of, strictness

COPYRIGHT = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: demo

Files: *
Copyright: The Authors
License: GPL-3+

Files: art/*
Copyright: Painter One
License: CC-BY-SA-4.0

Files: art/land/*
Copyright: Various
License: public-domain
 Donated to the public domain.

Files: art/land/*-anne*
Copyright: Anne Example
License: CC-BY-4.0

Files:
 art/land/hill1*
 art/land/lake\\*
Copyright: Various
License: public-domain

Files: art/land/shop*
Copyright: A Shop
License: CC-BY-NC-4.0
"""


def _jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((40, 30), 30 + seed).convert("RGB").save(buf, "JPEG", quality=85)
    return buf.getvalue()


def make_deb(path: Path, files: dict, links: dict = {}, compression: str = "xz") -> Path:
    """A minimal .deb: ar archive of debian-binary, control.tar.gz and data.tar.<compression>."""

    def tar_bytes(entries: dict, mode: str, links: dict = {}) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode=mode) as tar:
            for name, data in entries.items():
                info = tarfile.TarInfo(f"./{name}")
                info.size, info.mtime = len(data), 0
                tar.addfile(info, io.BytesIO(data))
            for name, target in links.items():
                info = tarfile.TarInfo(f"./{name}")
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
        return buf.getvalue()

    members = [("debian-binary", b"2.0\n"), ("control.tar.gz", tar_bytes({"control": b"Package: demo\n"}, "w:gz")),
               (f"data.tar.{compression}", tar_bytes(files, f"w:{compression}", links))]
    with open(path, "wb") as f:
        f.write(b"!<arch>\n")
        for name, data in members:
            f.write(f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode())
            f.write(data + (b"\n" if len(data) % 2 else b""))
    return path


DOC = "usr/share/doc/demo-photos/copyright"
ROOT = "usr/share/demo/"
IMAGES = {"hill1.jpg": 1, "hill10-anne.jpg": 2, "lake*.jpg": 3, "sea.jpg": 4, "shop1.jpg": 5}


@pytest.fixture
def fake_apt(tmp_path, monkeypatch):
    """A package, its pinned entry, and an ``apt-get`` on PATH that "downloads" it from a folder."""
    repo = tmp_path / "repo"
    repo.mkdir()
    files = {f"{ROOT}art/land/{n}": _jpeg(s) for n, s in IMAGES.items()}
    files[DOC] = COPYRIGHT.encode()
    files[f"{ROOT}art/readme.txt"] = b"not a photo"
    deb = make_deb(repo / "demo-photos_1.0_all.deb", files, links={f"{ROOT}art/land/link.jpg": "sea.jpg"})
    pkg = DebPackage("demo-photos", "1.0", hashlib.sha256(deb.read_bytes()).hexdigest(), deb.stat().st_size,
                     (f"{ROOT}art/land/*.jpg",), ROOT, "per file", "test package")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "apt-get"
    script.write_text('#!/bin/sh\n[ -n "$FAKE_APT_FAIL" ] && { echo "$FAKE_APT_FAIL" >&2; exit 100; }\n'
                      'name="${2%%=*}"\ncp "$FAKE_APT_REPO/${name}_1.0_all.deb" .\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("FAKE_APT_REPO", str(repo))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return pkg, files


# ---------------------------------------------------------------------- DEP-5
def test_dep5_patterns_and_the_narrowest_paragraphs():
    paras = dep5.parse_copyright(COPYRIGHT)
    assert [p.licence for p in paras] == ["GPL-3+", "CC-BY-SA-4.0", "public-domain", "CC-BY-4.0", "public-domain",
                                          "CC-BY-NC-4.0"]
    assert paras[4].patterns == ("art/land/hill1*", "art/land/lake\\*")
    assert dep5.parse_copyright("This package was debianized by someone.\n") is None
    assert dep5.pattern_regex("a/*.jpg").fullmatch("a/b/c.jpg") and not dep5.pattern_regex("a?").fullmatch("a")
    assert dep5.pattern_regex("lake\\*").fullmatch("lake*") and not dep5.pattern_regex("lake\\*").fullmatch("lakes")
    assert dep5.paragraph_for(paras, "src/main.c").licence == "GPL-3+"
    assert dep5.paragraph_for(paras, "art/land/hill10-anne.jpg").licence == "public-domain"  # the format's last match
    narrow = dep5.specific_matches(paras, "art/land/hill10-anne.jpg")
    assert [p.licence for p in narrow] == ["CC-BY-4.0", "public-domain"]  # overlapping, neither refines the other
    assert [p.licence for p in dep5.specific_matches(paras, "art/land/sea.jpg")] == ["public-domain"]
    assert [p.copyright for p in dep5.specific_matches(paras, "art/logo.png")] == ["Painter One"]


def test_strictest_licence_applies_where_narrowest_paragraphs_disagree():
    pkg = DebPackage("demo", "1", "0" * 64, 1, ("*",), "", "GPL-2+", "r")
    paras = dep5.parse_copyright(COPYRIGHT)
    assert licence_of(pkg, "art/land/hill10-anne.jpg", paras)[:2] == ("CC-BY-4.0", "Anne Example")
    assert "public-domain" in licence_of(pkg, "art/land/hill10-anne.jpg", paras)[2]
    assert licence_of(pkg, "art/land/hill1.jpg", paras) == ("public-domain", "Various", "")
    assert licence_of(pkg, "x.jpg", None) == ("GPL-2+", "see the package's copyright file", "")
    assert [strictness(x) for x in ("public-domain", "CC-BY-4.0", "CC-BY-SA-3.0", "GPL-2+", "CC-BY-NC-4.0",
                                    "CC-BY-ND-4.0", "")] == [0, 1, 2, 2, 3, 3, 3]


# ---------------------------------------------------------------------- .deb reading
@pytest.mark.parametrize("compression", ["xz", "gz"])
def test_reads_selected_files_from_a_deb_without_links(tmp_path, compression):
    deb = make_deb(tmp_path / "x.deb", {"usr/a.jpg": b"A", "usr/b.txt": b"B"}, {"usr/l.jpg": "a.jpg"}, compression)
    assert list(read_members(deb, lambda n: n.endswith(".jpg"))) == [("usr/a.jpg", b"A")]
    (tmp_path / "bad.deb").write_bytes(b"hello")
    with pytest.raises(DebError, match="bad.deb: not a Debian package"):
        list(read_members(tmp_path / "bad.deb", lambda n: True))


# ---------------------------------------------------------------------- fetch
def test_fetch_unpacks_photos_keeps_copyright_and_filters_licences(fake_apt, tmp_path):
    pkg, files = fake_apt
    got = fetch_photos(tmp_path / "out", tmp_path / "cache", (pkg,))
    assert isinstance(got, PhotoSet)
    out = tmp_path / "out"
    paths = {p.path: p for p in got.photos}
    assert set(paths) == {f"demo-photos/art/land/{n}" for n in IMAGES if n != "shop1.jpg"}  # NC is excluded
    for p in got.photos:
        assert (out / p.path).read_bytes() == files[p.member]
        assert p.sha256 == hashlib.sha256(files[p.member]).hexdigest()
    assert paths["demo-photos/art/land/hill10-anne.jpg"].licence == "CC-BY-4.0"
    assert (out / "demo-photos" / "copyright").read_text() == COPYRIGHT
    m = json.loads((out / "photos.json").read_text())
    assert m["total"] == 4 and m["packages"][0]["sha256"] == pkg.sha256 and m["packages"][0]["version"] == "1.0"
    assert m["packages"][0]["excluded"] == [{"member": f"{ROOT}art/land/shop1.jpg", "licence": "CC-BY-NC-4.0",
                                            "reason": "licence does not allow redistributing edited copies"}]
    notes = (out / "licence_notes.txt").read_text()
    assert "demo-photos 1.0" in notes and "hill10-anne.jpg: CC-BY-4.0; Anne Example" in notes
    assert str(tmp_path) not in json.dumps(m) + notes


def test_cached_package_needs_no_apt_and_a_refetch_replaces_the_output(fake_apt, tmp_path, monkeypatch):
    pkg, _ = fake_apt
    fetch_photos(tmp_path / "out", tmp_path / "cache", (pkg,))
    before = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    (tmp_path / "out" / "demo-photos" / "stale.jpg").write_bytes(b"old")
    assert isinstance(fetch_photos(tmp_path / "out", tmp_path / "cache", (pkg,)), PhotoSet)
    assert {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()} == before


def test_sha256_mismatch_is_an_error(fake_apt, tmp_path):
    pkg, _ = fake_apt
    wrong = DebPackage(**{**pkg.__dict__, "sha256": "f" * 64})
    with pytest.raises(ValueError, match="differs from the pinned f{64}"):
        fetch_photos(tmp_path / "out", tmp_path / "cache", (wrong,))


def test_foreign_output_folder_is_refused(fake_apt, tmp_path):
    pkg, _ = fake_apt
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("x")
    with pytest.raises(ValueError, match="holds no photos.json"):
        fetch_photos(tmp_path / "out", tmp_path / "cache", (pkg,))


@pytest.mark.parametrize("failure, says", [
    ("E: Failed to fetch http://deb.debian.org/x.deb  Could not resolve 'deb.debian.org'", "unreachable"),
    ("E: Version '1.0' for 'demo-photos' was not found", "cannot find demo-photos=1.0"),
    ("E: something else broke", "failed with exit status 100: E: something else broke"),
])
def test_apt_failures_are_not_run_with_the_reason(fake_apt, tmp_path, monkeypatch, failure, says):
    pkg, _ = fake_apt
    monkeypatch.setenv("FAKE_APT_FAIL", failure)
    got = fetch_photos(tmp_path / "out", tmp_path / "cache", (pkg,))
    assert isinstance(got, NotRun) and says in got.reason
    assert not (tmp_path / "out").exists()


def test_missing_apt_is_not_run_and_the_cli_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    got = fetch_photos(tmp_path / "out", tmp_path / "cache", PACKAGES[-1:])
    assert isinstance(got, NotRun) and "apt-get is not on PATH" in got.reason
    rc = main(["photos", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")])
    assert rc == 2 and capsys.readouterr().err.startswith("not run: apt-get is not on PATH")


def test_pinned_packages_are_arch_independent_free_and_not_reserved():
    reserved = ("mate-backgrounds", "lomiri-wallpapers", "plasma-workspace-wallpapers", "gcompris-qt-data",
                "opencv-doc", "stellarium-data")
    for p in PACKAGES:
        assert not p.name.startswith(reserved)
        assert len(p.sha256) == 64 and int(p.sha256, 16) >= 0 and p.size > 0
        assert p.licence and p.reason and all(pat.startswith(p.source_root) for pat in p.images)


# ---------------------------------------------------------------------- the real archive
@pytest.mark.slow
def test_real_download_of_the_smallest_package_builds_a_benchmark(tmp_path):
    if shutil.which("apt-get") is None:
        pytest.skip("apt-get is not installed here")
    small = min(PACKAGES, key=lambda p: p.size)
    got = fetch_photos(tmp_path / "photos", tmp_path / "cache", (small,))
    if isinstance(got, NotRun):
        pytest.skip(f"not run: {got.reason}")
    assert len(got.photos) >= 5 and all(p.licence for p in got.photos)
    rc = main(["build", "--photos", str(tmp_path / "photos"), "--out", str(tmp_path / "bench"), "--queries", "4",
               "--max-side", "96", "--licence-notes", str(tmp_path / "photos" / "licence_notes.txt")])
    assert rc == 0
    m = json.loads((tmp_path / "bench" / "manifest.json").read_text())
    assert len(m["photos"]["sources"]) == len(got.photos) and m["licence_notes"].startswith("Photographs from Debian")
