"""``mlc-mtp inspect`` on a package directory and on the files inside it: what the package holds."""

from __future__ import annotations

import json

from pipeline.cli import main
from pipeline.package.describe import package_of, package_report


def test_inspect_of_a_package_and_of_its_files(capsys, tiny_package):
    package = tiny_package[0]
    assert main(["inspect", str(package)]) == 0
    report = capsys.readouterr().out
    chat = json.loads((package / "mlc-chat-config.json").read_text())
    library = json.loads((package / "mlc-mtp-config.json").read_text())["model_lib"]["cpu"]
    assert report.startswith(f"package {package} (")
    assert f"model: gemma3, quantization q0f32, vocabulary {chat['vocab_size']}" in report
    assert "context window 256 tokens, prefill chunk 64" in report
    assert f"{library}  model for target cpu (TVM llvm), so, " in report
    assert "drafter: none" in report and "tokenizer: tokenizer.json" in report
    assert "stored tensors in 1 shard" in report
    for inside in (package / library, package / "tensor-cache.json", package / "mlc-chat-config.json"):
        assert package_of(inside) == package
        assert main(["inspect", str(inside)]) == 0
        out = capsys.readouterr().out
        assert out.splitlines()[0] == f"{inside} is part of the package {package}"
        assert out.splitlines()[1:] == report.splitlines()


def test_a_link_command_is_printed_as_recorded(tmp_path, tiny_package):
    """A library left for the user to link (Metal's .tar without a Mac linker): the command as the
    package records it, a shell line (it was printed one character per word)."""
    import shutil

    package = tmp_path / "pkg"
    shutil.copytree(tiny_package[0], package)
    runtime = json.loads((package / "mlc-mtp-config.json").read_text())
    command = "mkdir -p lib/x && xcrun metal ... -o lib/tiny-metal.dylib"
    runtime["libraries"][0]["link_command"] = command
    (package / "mlc-mtp-config.json").write_text(json.dumps(runtime))
    assert f"; link it with: {command}" in package_report(package)
