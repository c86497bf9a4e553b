"""Tests for harness.agent.factcheck on crafted texts: planted wrong numbers are flagged; rounding,
unit conversions, percentages, ratios and tok/s are accepted; structural numbers are not figures.
Also the facts table of an analysis and the report's rendering of a checked narrative."""

from __future__ import annotations

import pytest

from harness.agent.factcheck import MARK, Fact, check, extract, mark

FACTS = [
    Fact("best decode", 104.0812, "tok/s", "decode_tps"),
    Fact("config 2 decode", 97.2, "tok/s", "decode_tps"),
    Fact("best TTFT", 212.43, "ms", "ttft_ms"),
    Fact("load", 1234.6, "ms", "load_ms"),
    Fact("decode CV", 0.0314, "fraction"),
    Fact("n_ctx", 2048.0),
    Fact("temperature", 0.7),
    Fact("VRAM", 1536.0, "MiB", "vram_used_mib"),
]


@pytest.mark.parametrize("text", [
    "**104.1 tok/s**", "104 tok/s", "104.08 tokens/s", "104 tokens per second", "104.1 t/s",  # rounding
    "212 ms", "212.4 ms", "0.21 s", "0.212 seconds",  # ms <-> s
    "1,235 ms", "1.2 s", "1.23 s",  # thousands separators, seconds
    "3.1%", "3 %", "3.14 percent",  # fraction -> percent
    "n_ctx=2048", "2,048", "temperature 0.7",  # plain values
    "1.5 GiB", "1536 MiB",  # MiB <-> GiB
    "x1.07", "1.07x", "1.07 times",  # ratio of two facts of one metric
    "7.1%",  # relative difference 104.08 vs 97.2
])
def test_correct_figures_are_verified(text):
    r = check(text, FACTS)
    assert r.n == 1 and r.k == 1, r


@pytest.mark.parametrize("text", [
    "103 tok/s",  # 104.08 does not round to 103
    "104.2 tok/s",  # more precise than the fact allows
    "212 tok/s",  # right number, wrong unit
    "0.3 s",  # 212 ms is not 0.3 s
    "97.2 ms",  # a decode rate quoted as a latency
    "4.5%",  # neither a fact nor a difference of two facts of one metric
    "2049",
    "x1.3",
])
def test_planted_wrong_figures_are_flagged(text):
    r = check(text, FACTS)
    assert r.n == 1 and r.k == 0, r


def test_a_narrative_with_one_planted_number_counts_and_marks_it():
    text = ("## 1. Executive summary\n\n"
            "The model decodes at **104.1 tok/s** with a TTFT of **0.21 s** (load 1.2 s).\n\n"
            "## 2. Recommendations\n\n"
            "1. Keep n_ctx at 2048: decode is 7.1% faster than at 97.2 tok/s.\n"
            "2) Three recommendations, two rows, Gemma 3 270M Q4_K_M on llama.cpp 0.3.36 p99 H100.\n"
            "3. Expect **150.3 tok/s** on a GPU.\n\n"
            "| Risk | Mitigation |\n|---|---|\n| noise (CV 3.1%) | 5 repetitions |\n")
    r = check(text, FACTS)
    assert [f.text for f in r.unverified] == ["150.3 tok/s"]
    assert r.header() == f"{r.n - 1} of {r.n} figures verified"
    assert r.n == 8  # 104.1, 0.21 s, 1.2 s, 2048, 7.1%, 97.2, 150.3, 3.1%
    marked = mark(text, r)
    assert f"**150.3 tok/s{MARK}**" in marked
    assert marked.count(MARK) == 1
    assert marked.replace(MARK, "") == text


def test_structural_numbers_are_not_figures():
    found, ignored = extract("1. First\n  2) second\n### 3. Third\nthree recommendations, 2 rows, 10 items, "
                             "Gemma 3 270M, Q4_K_M, p99, gemma3_270m, llama.cpp 0.3.36, H100")
    assert found == []
    assert ignored == ["1", "2", "3", "2", "10", "3"]


def test_numbers_above_the_small_count_limit_and_decimals_are_figures():
    found, _ = extract("11 rows, 0.5 of them, 3.0 s")
    assert [(m.group(0), unit) for m, _, _, unit in found] == [("11", None), ("0.5", None), ("3.0 s", "s")]


def test_no_figures_means_zero_of_zero():
    r = check("Use the faster configuration.", FACTS)
    assert (r.k, r.n, r.header()) == (0, 0, "0 of 0 figures verified")


def test_report_renders_the_marked_narrative_in_markdown_and_escaped_html(tmp_path):
    from harness.report import html, markdown
    from harness.report.document import Document, Narrative

    text = "## 1. Summary\n\n**104.1 tok/s** and **150.3 tok/s** <script>alert(1)</script>\n\n| a | b |\n|---|---|\n| 1 | 2 |"
    r = check(text, FACTS)
    doc = Document("t", "s")
    doc.section("Narrative (written by m, fact-checked)").add(
        Narrative(text, tuple((f.start, f.end) for f in r.unverified)))
    md = markdown.render(doc)
    assert "> **104.1 tok/s** and **150.3 tok/s[unverified]**" in md and "> | 1 | 2 |" in md
    assert "<script>" not in md
    page = html.render(doc, tmp_path)
    assert '<mark class="unverified"' in page and "150.3 tok/s</mark>" in page
    assert "<strong>104.1 tok/s</strong>" in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<table>" in page and "<h4>1. Summary</h4>" in page and "> #### 1. Summary" in md


def test_facts_table_is_cut_to_the_budget_and_takes_its_facts_with_it():
    from harness.agent.facts import FactSheet, Fitted, Line, fit

    rows = tuple(Line(f"| {i} | {100 + i}.5 | {'n_ctx=4096, temperature=0.7, top_p=0.9' * 2} |", (Fact(f"row {i}", 100 + i + 0.5, "tok/s"),)) for i in (3, 1, 2))
    sheet = FactSheet(summary=(Line("Best: 103.5 tok/s.", (Fact("best", 103.5, "tok/s"),)),),
                      headers=("#", "decode tok/s"), rows=rows, table_order=(1, 2, 0))
    prompt = lambda facts: f"Facts:\n{facts}\nWrite."  # noqa: E731
    budget = len(prompt(sheet.render(2)))
    assert len(prompt(sheet.render())) > budget
    f = fit(sheet, prompt, len, budget)
    text, n = f.prompt, f.rows
    assert n == 2 and "| 3 | 103.5 |" in text and "| 1 | 101.5 |" in text and "| 2 |" not in text
    assert fit(sheet, prompt, len, budget + 1000) == Fitted(prompt(sheet.render()), 3, 1, len(prompt(sheet.render())))
    assert text.index("| 1 |") < text.index("| 3 |")  # shown in table order, kept in priority order
    assert "(1 more configuration not shown)" in text
    assert {f.name for f in sheet.facts(n)} == {"best", "row 3", "row 1"}
    assert check("102.5 tok/s", sheet.facts(n)).k == 0 and check("102.5 tok/s", sheet.facts()).k == 1
    with pytest.raises(ValueError, match="minimal fact sheet"):
        fit(sheet, prompt, len, 5)


def test_summary_lines_are_dropped_by_priority_after_the_rows():
    from harness.agent.facts import ESSENTIAL, FactSheet, Line, fit

    summary = (Line("Setup: model m, engine e, a long description of the hardware.", (), 1),
               Line("Best decode: 103.5 tok/s.", (Fact("best", 103.5, "tok/s"),), ESSENTIAL),
               Line("Effect of n_ctx on decode: none (largest difference 3.0%).",
                    (Fact("effect", 0.03, "fraction"),), 6),
               Line("Best TTFT: 212 ms.", (Fact("ttft", 212.0, "ms"),), ESSENTIAL),
               Line("Configurations: 3; samples: 6 ok, 0 failed.", (Fact("configurations", 3.0),), 2))
    rows = tuple(Line(f"| {i} | {100 + i}.5 | {'n_ctx=4096, temperature=0.7, top_p=0.9' * 2} |",
                      (Fact(f"row {i}", 100 + i + 0.5, "tok/s"),)) for i in (3, 1, 2))
    sheet = FactSheet(summary=summary, headers=("#", "decode tok/s"), rows=rows, table_order=(1, 2, 0))
    prompt = lambda facts: f"Facts:\n{facts}\nWrite."  # noqa: E731
    # Rows go first: with every summary line and one row the budget is just met.
    f = fit(sheet, prompt, len, len(prompt(sheet.render(1))))
    assert (f.rows, f.summary) == (1, 5)
    # Less room: the effect line (priority 6) goes, then the counts (2), then the setup (1).
    f = fit(sheet, prompt, len, len(prompt(sheet.render(1, 4))))
    assert (f.rows, f.summary) == (1, 4) and "Effect of" not in f.prompt and "Configurations" in f.prompt
    minimal = prompt(sheet.render(1, 2))
    f = fit(sheet, prompt, len, len(minimal))
    assert (f.rows, f.summary) == (1, 2) and f.prompt == minimal
    assert minimal.index("Best decode") < minimal.index("Best TTFT")  # display order kept
    assert "Setup" not in minimal and "| 3 | 103.5 |" in minimal
    assert {x.name for x in sheet.facts(1, 2)} == {"best", "ttft", "row 3"}
    # The essential lines are never dropped: below the minimal sheet it is an error.
    with pytest.raises(ValueError, match="minimal fact sheet"):
        fit(sheet, prompt, len, len(minimal) - 1)
    # The most summary lines that leave room for one row, then as many rows as fit beside them.
    for budget in range(len(minimal), len(prompt(sheet.render())) + 1, 7):
        k = max(k for k in range(2, 6) if len(prompt(sheet.render(1, k))) <= budget)
        n = max(n for n in range(1, 4) if len(prompt(sheet.render(n, k))) <= budget)
        assert fit(sheet, prompt, len, budget)[1:3] == (n, k), budget
