"""Where the WebGPU build finds its npm folder and esbuild, in a source checkout and in a wheel
install (``<prefix>/share/mlc-mtp/web``, pyproject's data-files), without building anything."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from pipeline import web
from pipeline.compile import wasm
from pipeline.errors import PipelineError

ROOT = Path(__file__).resolve().parents[2]


def test_a_source_checkout_uses_its_web_folder(monkeypatch):
    monkeypatch.delenv(web.WEB_ENV, raising=False)
    assert web.web_dir() == ROOT / "web"
    assert (web.web_dir() / "package.json").is_file()


def test_an_installed_wheel_uses_the_shared_folder(monkeypatch, tmp_path):
    monkeypatch.delenv(web.WEB_ENV, raising=False)
    no_checkout = tmp_path / "site-packages" / "web"
    assert web.web_dir(no_checkout, str(tmp_path / "venv")) == tmp_path / "venv" / "share" / "mlc-mtp" / "web"


def test_the_environment_variable_wins(monkeypatch, tmp_path):
    monkeypatch.setenv(web.WEB_ENV, str(tmp_path))
    assert web.web_dir() == tmp_path


def test_esbuild_from_path_when_the_web_folder_has_none(monkeypatch, tmp_path):
    monkeypatch.setattr(wasm, "WEB_DIR", tmp_path / "web")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(PipelineError) as info:
        wasm._esbuild()
    message = str(info.value)
    assert "esbuild" in message and f"npm ci --prefix {tmp_path / 'web'}" in message
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "esbuild"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    assert wasm._esbuild() == fake
    installed = tmp_path / "web" / "node_modules" / ".bin" / "esbuild"
    installed.parent.mkdir(parents=True)
    installed.write_text("")
    assert wasm._esbuild() == installed
