"""The documentation holds together: every relative link resolves, the index reaches every result page, and the
docs folder stays small enough to read online."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
#: ``[text](target)`` and ``![alt](target)``; the target ends at whitespace or the closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
#: The docs folder's budget (figures sized for reading, not for print).
DOCS_BUDGET_BYTES = 10 * 2**20


def markdown_files() -> list[Path]:
    """Every markdown page a reader meets: the README, docs/ and data/."""
    pages = [REPO / "README.md", *DOCS.rglob("*.md"), *(REPO / "data").rglob("*.md")]
    return sorted(page for page in pages if page.is_file())


def relative_links(page: Path) -> list[str]:
    """The relative link targets of a markdown page (code blocks and inline code ignored), fragments dropped."""
    text = INLINE_CODE.sub("", FENCE.sub("", page.read_text(encoding="utf-8")))
    targets = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # http(s):, mailto:, in-page anchors
        targets.append(target.split("#", 1)[0])
    return targets


def test_link_pattern_finds_links_and_skips_code():
    page_text = "See [a](x.md#s) and ![b](f/y.png), not `[c](z.md)` nor [d](https://e.org).\n```\n[e](w.md)\n```\n"
    text = INLINE_CODE.sub("", FENCE.sub("", page_text))
    assert LINK.findall(text) == ["x.md#s", "f/y.png", "https://e.org"]


@pytest.mark.parametrize("page", markdown_files(), ids=lambda page: str(page.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    broken = [target for target in relative_links(page) if not (page.parent / target).exists()]
    assert not broken, f"{page.relative_to(REPO)}: broken links {broken}"


def test_index_leads_to_every_result_page():
    index = DOCS / "index.md"
    linked = {(index.parent / target).resolve() for target in relative_links(index)}
    results = sorted((DOCS / "results").rglob("*.md"))
    assert results, "no generated result pages under docs/results"
    missing = [str(page.relative_to(DOCS)) for page in results if page.resolve() not in linked]
    assert not missing, f"docs/index.md does not link {missing}"
    pages = [page for page in DOCS.glob("*.md") if page.name != "index.md"]
    missing = [page.name for page in pages if page.resolve() not in linked]
    assert not missing, f"docs/index.md does not link the pages {missing}"


def test_every_result_page_has_its_json_and_command():
    for page in (DOCS / "results").rglob("*.md"):
        assert page.with_suffix(".json").is_file(), f"{page.relative_to(DOCS)} has no JSON beside it"
        assert "python -m benchmarks." in page.read_text(encoding="utf-8"), \
            f"{page.relative_to(DOCS)} does not say which command made it"


def test_docs_fit_their_budget():
    total = sum(path.stat().st_size for path in DOCS.rglob("*") if path.is_file())
    assert total < DOCS_BUDGET_BYTES, f"docs/ holds {total / 2**20:.1f} MiB, over {DOCS_BUDGET_BYTES / 2**20:.0f} MiB"


def _section_tables(page: Path, heading: str) -> list[list[dict[str, str]]]:
    """The markdown tables of one ``###`` section of a page, as rows of ``{column: cell}`` (backticks removed)."""
    text = page.read_text(encoding="utf-8")
    section = text.split(heading, 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    tables, lines = [], section.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and i + 1 < len(lines) and set(lines[i + 1].replace("|", "").strip()) <= set("-: "):
            if i > 0 and lines[i - 1].startswith("|"):
                continue
            header = [cell.strip() for cell in line.strip("|").split("|")]
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                cells = [cell.strip().replace("`", "") for cell in row.strip("|").split("|")]
                rows.append(dict(zip(header, cells)))
            tables.append(rows)
    return tables


def _stated(cell: str, value) -> bool:
    """Whether a table cell states ``value`` (its first word; '–' is zero, as for a rate that is not used)."""
    word = cell.split()[0] if cell.split() else ""
    if value is None or isinstance(value, (bool, str)):
        return word == str(value)
    return (0.0 if word == "–" else float(word)) == pytest.approx(float(value), rel=1e-12)


def test_method_page_states_the_defaults_of_ctbird_config():
    from ctbird.config import METHOD_CONFIGS, PRESETS, BirdConfig

    page = DOCS / "method.md"
    bird_table, other_table = _section_tables(page, "### Defaults (`ctbird.config`)")[:2]  # then measurements
    assert {row["task"] for row in bird_table} == {"ct", "gaussian-deblur", "motion-deblur", "sr", "denoise", "inpaint"}
    for row in bird_table:
        config = BirdConfig.for_task(row["task"])
        for key in ("iters", "lr_latent", "lr_operator"):
            assert _stated(row[key], getattr(config, key)), (row["task"], key, row[key], getattr(config, key))
    ct, ct_row = BirdConfig(), next(row for row in bird_table if row["task"] == "ct")
    assert ct.latent_optimizer in ct_row["lr_latent"] and ct.latent_lr_schedule in ct_row["lr_latent"]
    assert f"SinogramFilter({ct.data_filter:g})" in ct_row["lr_latent"] and ("keep_best" in ct_row["lr_latent"]) == ct.keep_best
    text = page.read_text(encoding="utf-8")
    restore_delta_t = int(re.search(r"`delta_t = (\d+)` \(\d+ DDIM steps\) for the restoration tasks", text).group(1))
    assert {BirdConfig.for_task(row["task"]).delta_t for row in bird_table if row["task"] != "ct"} == {restore_delta_t}
    assert f"CT's latent search uses\n`delta_t = {ct.delta_t}`" in text
    fast = PRESETS["cpu-fast"]
    assert "`cpu-fast` preset" in text and f"runs {fast['iters']} iterations and refines in steps of " \
        f"{fast['refine_delta_t']} for CT" in text.replace("\n", " ")
    # the other methods' settings, and bird's refinement (bird-raw is bird without it)
    assert {row["method"] for row in other_table} == set(METHOD_CONFIGS) - {"bird-raw"}
    assert {row["setting"] for row in other_table if row["method"] == "bird"} == \
        {key for key in BirdConfig.keys() if key.startswith("refine_")}
    for row in other_table:
        config = METHOD_CONFIGS[row["method"]]()
        assert _stated(row["default"], getattr(config, row["setting"])), (row["method"], row["setting"], row["default"])


def test_method_page_states_the_refinement_defaults():
    from ctbird.config import RESTORE_TASKS, RefineConfig

    table = _section_tables(DOCS / "method.md", "### Refinement after BIRD (`ctbird.config.RefineConfig`)")[0]
    assert {row["task"] for row in table} == set(RESTORE_TASKS)
    for row in table:
        config = RefineConfig.for_task(row["task"])
        for key in ("t0", "step", "cg_iters", "anchor", "start", "samples", "kernel_refits", "match_noise",
                    "noise_scale", "anchor_misfit"):
            assert _stated(row[key], getattr(config, key)), (row["task"], key, row[key], getattr(config, key))


def readme_python_example() -> str:
    """The Python block of the README's ``Use`` section."""
    use = (REPO / "README.md").read_text(encoding="utf-8").split("\n## Use", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```python\n(.*?)^```", use, re.S | re.M)
    assert len(blocks) == 1, "the README's Use section should hold one Python example"
    return blocks[0]


def test_readme_python_example_runs(monkeypatch, tiny_prior, capsys):
    """The README's example, as written, on a 16 x 16 grid with a tiny random prior and a one-iteration budget
    (the example itself asks for the shipped prior and the full budget at 256 x 256)."""
    import ctbird

    code = readme_python_example()
    assert "n = 256" in code
    reconstruct = ctbird.reconstruct
    calls = []

    def small_budget(*args, **kwargs):
        calls.append(kwargs["method"])
        return reconstruct(*args, **kwargs, prior=tiny_prior, iters=1, delta_t=500)

    monkeypatch.setattr(ctbird, "reconstruct", small_budget)
    namespace: dict = {}
    exec(compile(code.replace("n = 256", "n = 16"), "README.md", "exec"), namespace)
    assert calls == ["bird"]
    assert tuple(namespace["result"].image.shape) == (1, 1, 16, 16)
    printed = capsys.readouterr().out
    assert "torch.Size([1, 1, 16, 16])" in printed and "'psnr'" in printed and "'rmse_hu'" in printed


def test_every_module_the_docs_run_exists():
    """``python -m NAME`` in a page (README, docs/, data/; generated pages included) names a module of this tree."""
    from importlib.util import find_spec

    named = {name.rstrip(".") for page in markdown_files()
             for name in re.findall(r"python3? -m ((?:benchmarks|ctbird|operators)[\w.]*)", page.read_text(encoding="utf-8"))}
    assert "benchmarks.ct" in named
    missing = sorted(name for name in named if find_spec(name) is None)
    assert not missing, f"the docs run modules that do not exist: {missing}"
