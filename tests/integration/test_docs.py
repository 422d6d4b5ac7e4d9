"""Every configuration block in the docs is real: each ```yaml block of docs/*.md and README.md
passes `wsgate --check` (a block preceded by `<!-- fragment -->` is a partial example and is
skipped), ```haproxy, ```nginx and ```caddy blocks pass `haproxy -c` / `nginx -t` /
`caddy validate`, and ```yaml envoy and ```yaml traefik blocks parse as YAML."""

import glob
import os
import re
import shutil
import subprocess

import pytest
import yaml

from harness import SOURCE_DIR, run_wsgate

FRAGMENT_MARK = "<!-- fragment -->"


def doc_blocks():
    """[(file, line, info, text, is_fragment)] for every fenced block."""
    blocks = []
    paths = sorted(glob.glob(os.path.join(SOURCE_DIR, "docs", "*.md")))
    paths.append(os.path.join(SOURCE_DIR, "README.md"))
    for path in paths:
        with open(path) as f:
            lines = f.read().split("\n")
        i = 0
        while i < len(lines):
            opening = re.match(r"^```(\S.*)?$", lines[i])
            if not opening:
                i += 1
                continue
            start = i
            i += 1
            while i < len(lines) and lines[i] != "```":
                i += 1
            before = [l for l in lines[:start] if l.strip()]
            fragment = bool(before) and before[-1].strip() == FRAGMENT_MARK
            blocks.append((os.path.relpath(path, SOURCE_DIR), start + 1,
                           (opening.group(1) or "").strip(), "\n".join(lines[start + 1:i]) + "\n",
                           fragment))
            i += 1
    return blocks


def of_kind(info):
    return [b for b in doc_blocks() if b[2] == info]


def make_reference_certificates(directory):
    """The reference names certificates under certs/: make them, as an operator would."""
    subprocess.run(["bash", os.path.join(SOURCE_DIR, "examples", "tls", "make-certs.sh"),
                    str(directory / "certs")], check=True, capture_output=True)
    shutil.copy(directory / "certs" / "ca.crt", directory / "certs" / "backend-ca.pem")


def test_every_wsgate_yaml_block_passes_check(tmp_path):
    blocks = of_kind("yaml")
    checked = [b for b in blocks if not b[4]]
    assert len(checked) >= 3, "expected the configuration reference and coming-from examples"
    assert len(blocks) - len(checked) <= 3, "keep <!-- fragment --> exemptions few"
    make_reference_certificates(tmp_path)
    failures = []
    for index, (doc, line, _, text, _) in enumerate(checked):
        path = tmp_path / f"block-{index}.yaml"
        path.write_text(text)
        result = run_wsgate("--check", "-c", str(path))
        if result.returncode != 0:
            failures.append(f"{doc}:{line}:\n{result.stderr}")
    assert not failures, "\n".join(failures)


def test_configuration_reference_example_sets_every_section():
    """The big example in configuration.md shows every top-level section."""
    doc, line, _, text, _ = next(b for b in of_kind("yaml") if b[0] == "docs/configuration.md")
    sections = set(yaml.safe_load(text))
    assert {"workers", "listeners", "admin", "routes", "pools", "limits", "timeouts",
            "drain", "retries"} <= sections, f"{doc}:{line}: {sections}"


def check_blocks(info, tmp_path, tool, command):
    """Write each ```INFO block to a file and run command(tool, path) on it; exit 0 expected."""
    blocks = of_kind(info)
    assert len(blocks) >= 2
    for index, (doc, line, _, text, _) in enumerate(blocks):
        path = tmp_path / f"{info}-{index}.conf"
        path.write_text(text)
        result = subprocess.run(command(tool, str(path)), capture_output=True, text=True,
                                timeout=30)
        assert result.returncode == 0, f"{doc}:{line}:\n{result.stdout}{result.stderr}"


def installed(name):
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}",) if os.path.exists(p)), None)


@pytest.mark.skipif(not installed("haproxy"), reason="haproxy is not installed")
def test_haproxy_blocks_are_valid(tmp_path):
    check_blocks("haproxy", tmp_path, installed("haproxy"),
                 lambda tool, path: [tool, "-c", "-f", path])


@pytest.mark.skipif(not installed("nginx"), reason="nginx is not installed")
def test_nginx_blocks_are_valid(tmp_path):
    check_blocks("nginx", tmp_path, installed("nginx"),
                 lambda tool, path: [tool, "-t", "-q", "-e", "stderr", "-p", str(tmp_path),
                                     "-c", path, "-g", f"pid {tmp_path}/nginx.pid;"])


@pytest.mark.skipif(not installed("caddy"), reason="caddy is not installed")
def test_caddy_blocks_are_valid(tmp_path):
    check_blocks("caddy", tmp_path, installed("caddy"),
                 lambda tool, path: ["env", f"HOME={tmp_path}", f"XDG_DATA_HOME={tmp_path}",
                                     f"XDG_CONFIG_HOME={tmp_path}", tool, "validate",
                                     "--config", path, "--adapter", "caddyfile"])


def test_traefik_blocks_parse():
    """Traefik is not packaged for Debian 12: its blocks are checked as YAML with the shape of a
    static (entryPoints) or dynamic (http.routers / http.services) configuration."""
    blocks = of_kind("yaml traefik")
    assert len(blocks) >= 2
    for doc, line, _, text, _ in blocks:
        config = yaml.safe_load(text)
        assert "entryPoints" in config or "services" in config.get("http", {}), f"{doc}:{line}"


def test_envoy_blocks_parse():
    blocks = of_kind("yaml envoy")
    assert blocks
    for doc, line, _, text, _ in blocks:
        config = yaml.safe_load(text)
        assert {"listeners", "clusters"} <= set(config["static_resources"]), f"{doc}:{line}"


def key_paths(node, prefix=""):
    """Leaf key paths of a loaded YAML document, list indices dropped: pools.backends.weight."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from key_paths(value, f"{prefix}.{key}" if prefix else key)
    elif isinstance(node, list) and node and isinstance(node[0], dict):
        for item in node:
            yield from key_paths(item, prefix)
    else:
        yield prefix


def test_configuration_reference_example_shows_every_key(tmp_path):
    """The example in configuration.md writes out every key wsgate --print-config knows, and
    each of them is described in the reference's tables."""
    doc, line, _, text, _ = next(b for b in of_kind("yaml") if b[0] == "docs/configuration.md")
    path = tmp_path / "reference.yaml"
    path.write_text(text)
    make_reference_certificates(tmp_path)
    printed = run_wsgate("--print-config", "-c", str(path))
    assert printed.returncode == 0, printed.stderr
    known = set(key_paths(yaml.safe_load(printed.stdout)))
    shown = set(key_paths(yaml.safe_load(text)))
    assert known <= shown, f"{doc}:{line}: the example lacks {sorted(known - shown)}"
    with open(os.path.join(SOURCE_DIR, doc)) as f:
        reference = f.read()
    undocumented = [k for k in known if f"`{k.rsplit('.', 1)[-1]}`" not in reference
                    and f".{k.rsplit('.', 1)[-1]}`" not in reference]
    assert not undocumented, f"keys without a row in {doc}: {undocumented}"


def test_every_table_renders():
    """Each run of table rows starts with a header and its |---| separator line, so no row is
    left to render as raw pipes (a blank or prose line inside a table splits it)."""
    paths = sorted(glob.glob(os.path.join(SOURCE_DIR, "docs", "*.md")))
    paths.append(os.path.join(SOURCE_DIR, "README.md"))
    problems = []
    for path in paths:
        with open(path) as f:
            lines = f.read().split("\n")
        in_code = False
        run = []
        for number, line in enumerate(lines + [""], 1):
            if line.startswith("```"):
                in_code = not in_code
            if not in_code and line.startswith("|"):
                run.append((number, line))
                continue
            if run:
                first_number, _ = run[0]
                if len(run) < 2 or not re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", run[1][1].strip()):
                    problems.append(f"{os.path.relpath(path, SOURCE_DIR)}:{first_number}: "
                                    "table rows without a header and separator line")
                run = []
    assert not problems, "\n".join(problems)
